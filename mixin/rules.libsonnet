// Recording rules for dashboards and queries: nothing alerts on them.
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
    ],
  },
}
