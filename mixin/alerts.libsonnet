// Alerts, each with a runbook section in the README ($._config.runbookBase),
// and the recording rules they read: a group's rules are evaluated in
// order, so an alert sees this evaluation's recorded series, never the
// previous one's (Prometheus evaluates groups independently).
{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'compute-optimizer-exporter.accounts',
        rules: [
          {
            record: 'aws_compute_optimizer:account_info:deduplicated',
            comment:: "Every join below matches on `organization` as well as `account_id`:\none account ID can be listed by two organisations (an account that\nmoved, an organisation failing with its last good data kept), and\nwithout it the join is many-to-many and the whole alert fails to\nevaluate, or an alert carries the other organisation's team. Where\nno series has the label it matches the empty value on both sides.\nOne series per account however many replicas report it: two exporter\nreplicas (or pods) differ only in `instance` and `pod`, which are\naggregated away, so an HA pair raises one alert per account. Only\nreplicas whose organisation data is complete (names, OUs and every\ntag known) are heard when at least one is, so a fresh replica still\nlearning tags neither doubles an alert nor moves it to another\nreceiver; with none complete, all are. Per organisation: where an\n`organization` label tells several apart in one job, one complete\norganisation does not silence another's (without it, it matches\nthe empty value on both sides).",
            expr: |||
              max without (instance, pod) (
                aws_compute_optimizer_account_info%(sel)s
                  and on (instance, job, %(organizationLabel)s) (aws_compute_optimizer_organizations_complete%(sel)s == 1)
                or
                (
                  aws_compute_optimizer_account_info%(sel)s
                    unless on (job, %(organizationLabel)s) (aws_compute_optimizer_organizations_complete%(sel)s == 1)
                )
              )
            ||| % $._config,
          },
          {
            record: 'aws_compute_optimizer:account_stuck_pending_seconds',
            comment:: "Pending accounts stuck by either clock, valued in seconds Pending:\nAWS's lastUpdatedTimestamp older than a day, or, should AWS refresh\nthat timestamp while an account stays Pending, Prometheus' own\nhistory: Pending a day ago and at every sample since (valued 86400,\na lower bound).",
            expr: |||
              max without (instance, pod) (
                (time() - aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds%(sel)s > %(pendingThresholdSeconds)d)
                  and on (instance, job, %(organizationLabel)s, account_id)
                (aws_compute_optimizer_enrollment_status{%(selc)sstatus="Pending"} == 1)
              )
              or on (job, %(organizationLabel)s, account_id)
              max without (instance, pod, status) (
                %(pendingThresholdSeconds)d * (
                  (aws_compute_optimizer_enrollment_status{%(selc)sstatus="Pending"} offset %(pendingThreshold)s == 1)
                    and on (instance, job, %(organizationLabel)s, account_id)
                  (min_over_time(aws_compute_optimizer_enrollment_status{%(selc)sstatus="Pending"}[%(pendingThreshold)s]) == 1)
                )
              )
            ||| % $._config,
          },
          {
            record: 'aws_compute_optimizer:account_failed',
            comment:: 'Failed accounts, one series each, valued in seconds since AWS last\nupdated the status (1 where it gives no timestamp).',
            expr: |||
              max without (instance, pod) (
                (time() - aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds%(sel)s)
                  and on (instance, job, %(organizationLabel)s, account_id)
                (aws_compute_optimizer_enrollment_status{%(selc)sstatus="Failed"} == 1)
              )
              or on (job, %(organizationLabel)s, account_id)
              max without (instance, pod, status) (aws_compute_optimizer_enrollment_status{%(selc)sstatus="Failed"} == 1)
            ||| % $._config,
          },
          {
            alert: 'ComputeOptimizerAccountPendingTooLong',
            comment:: 'Enrollment normally completes within hours; a day in Pending means it\nis stuck. Carries account_name, ou_id, ou_path and the tag_* labels\nof account_info (route on them in Alertmanager), and fires without\nthem when account names are off.\nNot for accounts Organizations has suspended or is closing: nobody\ncan fix their enrollment (the dashboard still shows them).',
            expr: |||
              (
                aws_compute_optimizer:account_info:deduplicated
                  * on (job, %(organizationLabel)s, account_id) group_left ()
                aws_compute_optimizer:account_stuck_pending_seconds
                or on (job, %(organizationLabel)s, account_id)
                aws_compute_optimizer:account_stuck_pending_seconds
              )
              unless on (job, %(organizationLabel)s, account_id)
              aws_compute_optimizer:account_info:deduplicated{account_state=~"SUSPENDED|PENDING_CLOSURE|CLOSED"}
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
              status: 'Pending',
            },
            annotations: {
              summary: 'AWS account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }} has been Pending in Compute Optimizer for {{ $value | humanizeDuration }}',
              description: "Account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }}{{ with $labels.ou_path }} in {{ . }}{{ end }} has been in the Pending enrollment status for {{ $value | humanizeDuration }} (threshold 24h; enrollment normally finishes within hours). The reason AWS gives is on the exporter's /status page. Check that the account can create the AWSServiceRoleForComputeOptimizer service-linked role (no SCP denies iam:CreateServiceLinkedRole), then re-run the opt-in from the management account.",
              in_status_for: '{{ $value | humanizeDuration }}',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizeraccountpendingtoolong',
            },
          },
          {
            alert: 'ComputeOptimizerAccountFailed',
            comment:: 'Failed never heals by itself; 15m filters a status seen mid-transition.',
            expr: |||
              (
                aws_compute_optimizer:account_info:deduplicated
                  * on (job, %(organizationLabel)s, account_id) group_left ()
                aws_compute_optimizer:account_failed
                or on (job, %(organizationLabel)s, account_id)
                aws_compute_optimizer:account_failed
              )
              unless on (job, %(organizationLabel)s, account_id)
              aws_compute_optimizer:account_info:deduplicated{account_state=~"SUSPENDED|PENDING_CLOSURE|CLOSED"}
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
              status: 'Failed',
            },
            annotations: {
              summary: 'AWS account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }} failed to enroll in Compute Optimizer',
              description: "Compute Optimizer reports the Failed enrollment status for account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }}{{ with $labels.ou_path }} in {{ . }}{{ end }}. The reason AWS gives is on the exporter's /status page and in its log. Fix the cause (usually the service-linked role or an SCP) and opt the account in again from the management account.",
              in_status_for: '{{ if gt $value 1.0 }}{{ $value | humanizeDuration }}{{ else }}unknown{{ end }}',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizeraccountfailed',
            },
          },
        ],
      },
      {
        name: 'compute-optimizer-exporter.automation',
        rules: [
          {
            record: 'aws_compute_optimizer:automation_account_stuck_pending_seconds',
            comment:: 'Compute Optimizer Automation (aws.automation), routed as the\nenrollment alerts are: the same joins on organization and\naccount_id, the same deduplicated account_info (names, OUs, tags),\nthe same exclusion of suspended and closing accounts.',
            expr: |||
              max without (instance, pod) (
                (time() - aws_compute_optimizer_automation_enrollment_status_last_updated_timestamp_seconds%(sel)s > %(pendingThresholdSeconds)d)
                  and on (instance, job, %(organizationLabel)s, account_id)
                (aws_compute_optimizer_automation_enrollment_status{%(selc)sstatus="Pending"} == 1)
              )
              or on (job, %(organizationLabel)s, account_id)
              max without (instance, pod, status) (
                %(pendingThresholdSeconds)d * (
                  (aws_compute_optimizer_automation_enrollment_status{%(selc)sstatus="Pending"} offset %(pendingThreshold)s == 1)
                    and on (instance, job, %(organizationLabel)s, account_id)
                  (min_over_time(aws_compute_optimizer_automation_enrollment_status{%(selc)sstatus="Pending"}[%(pendingThreshold)s]) == 1)
                )
              )
            ||| % $._config,
          },
          {
            record: 'aws_compute_optimizer:automation_account_failed',
            expr: |||
              max without (instance, pod) (
                (time() - aws_compute_optimizer_automation_enrollment_status_last_updated_timestamp_seconds%(sel)s)
                  and on (instance, job, %(organizationLabel)s, account_id)
                (aws_compute_optimizer_automation_enrollment_status{%(selc)sstatus="Failed"} == 1)
              )
              or on (job, %(organizationLabel)s, account_id)
              max without (instance, pod, status) (aws_compute_optimizer_automation_enrollment_status{%(selc)sstatus="Failed"} == 1)
            ||| % $._config,
          },
          {
            alert: 'ComputeOptimizerAutomationAccountPendingTooLong',
            expr: |||
              (
                aws_compute_optimizer:account_info:deduplicated
                  * on (job, %(organizationLabel)s, account_id) group_left ()
                aws_compute_optimizer:automation_account_stuck_pending_seconds
                or on (job, %(organizationLabel)s, account_id)
                aws_compute_optimizer:automation_account_stuck_pending_seconds
              )
              unless on (job, %(organizationLabel)s, account_id)
              aws_compute_optimizer:account_info:deduplicated{account_state=~"SUSPENDED|PENDING_CLOSURE|CLOSED"}
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
              status: 'Pending',
            },
            annotations: {
              summary: 'AWS account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }} has been Pending in Compute Optimizer Automation for {{ $value | humanizeDuration }}',
              description: "Account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }}{{ with $labels.ou_path }} in {{ . }}{{ end }} has been in the Pending Automation enrollment status for {{ $value | humanizeDuration }} (threshold 24h). The reason AWS gives is on the exporter's /status page. An account enrolls in Automation only once it is Active in Compute Optimizer itself.",
              in_status_for: '{{ $value | humanizeDuration }}',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerautomationaccountpendingtoolong',
            },
          },
          {
            alert: 'ComputeOptimizerAutomationAccountFailed',
            expr: |||
              (
                aws_compute_optimizer:account_info:deduplicated
                  * on (job, %(organizationLabel)s, account_id) group_left ()
                aws_compute_optimizer:automation_account_failed
                or on (job, %(organizationLabel)s, account_id)
                aws_compute_optimizer:automation_account_failed
              )
              unless on (job, %(organizationLabel)s, account_id)
              aws_compute_optimizer:account_info:deduplicated{account_state=~"SUSPENDED|PENDING_CLOSURE|CLOSED"}
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
              status: 'Failed',
            },
            annotations: {
              summary: 'AWS account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }} failed to enroll in Compute Optimizer Automation',
              description: "Compute Optimizer Automation reports the Failed enrollment status for account {{ $labels.account_id }}{{ with $labels.account_name }} ({{ . }}){{ end }}{{ with $labels.ou_path }} in {{ . }}{{ end }}. The reason AWS gives is on the exporter's /status page. Check that the account is Active in Compute Optimizer first, then enroll it in Automation again from the management account.",
              in_status_for: '{{ if gt $value 1.0 }}{{ $value | humanizeDuration }}{{ else }}unknown{{ end }}',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerautomationaccountfailed',
            },
          },
          {
            alert: 'ComputeOptimizerAutomationPollsFailing',
            comment:: 'Three failed rounds in a row at the default 5m interval.',
            expr: |||
              aws_compute_optimizer_automation_up%(sel)s == 0
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'compute-optimizer-exporter {{ $labels.instance }} cannot poll Compute Optimizer Automation',
              description: "The latest polls of Compute Optimizer Automation's ListAccounts by {{ $labels.instance }} failed for 15 minutes; the exported Automation statuses are from the last successful poll. The log line \"Automation listing failed\" names the error code and what to fix (the organisation not enrolled in Automation, a region that does not offer it, IAM).",
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerautomationpollsfailing',
            },
          },
          {
            alert: 'ComputeOptimizerTrustedAccessDisabled',
            comment:: 'Member accounts cannot enroll while Compute Optimizer lacks trusted\naccess in Organizations: when some are Pending or Failed and it is\noff, that is the first thing to fix. Valued in the number of Pending\nand Failed accounts.',
            expr: |||
              max by (job, %(organizationLabel)s) (
                sum without (status) (aws_compute_optimizer_enrollment_accounts{%(selc)sstatus=~"Pending|Failed"})
              ) > 0
              and on (job, %(organizationLabel)s)
              max by (job, %(organizationLabel)s) (aws_compute_optimizer_organization_trusted_access_enabled%(sel)s) == 0
            ||| % $._config,
            'for': $._config.trustedAccessFor,
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: std.strReplace('Compute Optimizer has no trusted access in AWS Organizations{{ with $labels.organization }} ({{ . }}){{ end }} while {{ $value }} accounts are Pending or Failed', '$labels.organization', '$labels.' + $._config.organizationLabel),
              description: std.strReplace('AWS Organizations reports that compute-optimizer.amazonaws.com has no trusted access{{ with $labels.organization }} in organisation {{ . }}{{ end }}, and {{ $value }} member accounts are Pending or Failed in Compute Optimizer: they cannot enroll until it is turned on from the management account.', '$labels.organization', '$labels.' + $._config.organizationLabel),
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizertrustedaccessdisabled',
            },
          },
        ],
      },
      {
        name: 'compute-optimizer-exporter.exporter',
        rules: [
          {
            alert: 'ComputeOptimizerExporterDown',
            comment:: 'A target that served exporter metrics within the last hour and is now down.',
            expr: |||
              up%(sel)s == 0
                and on (instance, job)
              max_over_time(aws_compute_optimizer_exporter_build_info%(sel)s[1h])
            ||| % $._config,
            'for': '5m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'compute-optimizer-exporter {{ $labels.instance }} is down',
              description: 'Prometheus cannot scrape {{ $labels.instance }} (job {{ $labels.job }}) for 5 minutes. Enrollment alerts for this organisation are blind until it is back. Check the process or pod, its logs, and /-/healthy.',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerexporterdown',
            },
          },
          {
            alert: 'ComputeOptimizerExporterAbsent',
            comment:: 'No exporter scraped at all: crash-looping from the start, a\nServiceMonitor the Prometheus does not select, a wrong scrape config.\nLoad these rules only where this Prometheus should scrape one.',
            expr: |||
              absent(aws_compute_optimizer_exporter_build_info%(sel)s)
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'No compute-optimizer-exporter is scraped',
              description: 'Prometheus has scraped no compute-optimizer-exporter for 15 minutes, so no enrollment alert can fire. Check that the exporter runs (pod status, restarts, its log), that the ServiceMonitor carries the labels your Prometheus selects (e.g. release) or that the static scrape config points at it.',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerexporterabsent',
            },
          },
          {
            alert: 'ComputeOptimizerPollsFailing',
            comment:: 'Three failed polls in a row at the default 5m interval.',
            expr: |||
              aws_compute_optimizer_up%(sel)s == 0
            ||| % $._config,
            'for': '15m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'compute-optimizer-exporter {{ $labels.instance }} cannot poll Compute Optimizer',
              description: "The latest polls of GetEnrollmentStatusesForOrganization by {{ $labels.instance }} failed for 15 minutes; the exported statuses are from the last successful poll. The exporter's log line \"poll failed\" names the error code and what to fix (IAM permission, management or delegated-administrator account, assumed role, throttling).",
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerpollsfailing',
            },
          },
          {
            alert: 'ComputeOptimizerOrganizationWalkFailing',
            comment:: 'The organisation walk (names, OUs, tags that route the account\nalerts) failed, and every retry for an hour failed too (retries come\na minute after a failure, doubling, at most aws.organizations_interval\napart): alerts route on labels it no longer refreshes.',
            expr: |||
              aws_compute_optimizer_organizations_up%(sel)s == 0
            ||| % $._config,
            'for': '1h',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'compute-optimizer-exporter {{ $labels.instance }} cannot walk the AWS organisation',
              description: 'The latest walks of AWS Organizations by {{ $labels.instance }} failed for an hour; account names, OUs and tags (which route the account alerts) are the last ones known. The log line "refreshing the organisation failed" names the error code: a missing organizations: permission, throttling (lower aws.organizations_requests_per_second), or the endpoint.',
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerorganizationwalkfailing',
            },
          },
          {
            alert: 'ComputeOptimizerDataStale',
            comment:: 'No complete poll for three poll intervals, whatever the reason.',
            expr: |||
              time() - aws_compute_optimizer_last_successful_poll_timestamp_seconds%(sel)s
                > %(staleIntervals)d * aws_compute_optimizer_poll_interval_seconds%(sel)s
            ||| % $._config,
            'for': '5m',
            labels: {
              severity: 'warning',
            },
            annotations: {
              summary: 'Compute Optimizer enrollment data from {{ $labels.instance }} is {{ $value | humanizeDuration }} old',
              description: "No poll by {{ $labels.instance }} has completed for {{ $value | humanizeDuration }}, more than three poll intervals. Dashboards and account alerts show old data. See ComputeOptimizerPollsFailing and the exporter's log.",
              runbook_url: $._config.runbookBase + '#runbook-computeoptimizerdatastale',
            },
          },
        ],
      },
    ],
  },
}
