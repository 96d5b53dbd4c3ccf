// Recording rules: what the alerts and the dashboard read, computed once.
// Every join matches on the organisation label as well as account_id (one
// account ID can be listed by two organisations).
{
  prometheusRules+:: {
    groups+: [
      {
        name: 'compute-optimizer-exporter.recording',
        rules: [
          {
            record: 'aws_compute_optimizer:enrollment_status_age_seconds',
            comment:: 'Seconds each account has been in its current status, labelled with the status.',
            expr: |||
              (time() - aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds%(sel)s)
                * on (instance, job, %(organizationLabel)s, account_id) group_left (status)
              (aws_compute_optimizer_enrollment_status%(sel)s == 1)
            ||| % $._config,
          },
          {
            record: 'aws_compute_optimizer:enrollment_active_ratio',
            comment:: "Share of the organisation's accounts that are Active (0-1), one\nseries per organisation where an `organization` label tells several\napart.",
            expr: |||
              sum by (instance, job, %(organizationLabel)s) (aws_compute_optimizer_enrollment_accounts{%(selc)sstatus="Active"})
                / sum by (instance, job, %(organizationLabel)s) (aws_compute_optimizer_enrollment_accounts%(sel)s)
            ||| % $._config,
          },
        ],
      },
      {
        name: 'compute-optimizer-exporter.accounts.recording',
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
        ],
      },
    ],
  },
}
