// What a user of the mixin may change, as kube-prometheus users do:
//   (import 'compute-optimizer-exporter/mixin.libsonnet') + {
//     _config+:: { selector: 'job="compute-optimizer-exporter"' },
//   }
{
  _config+:: {
    // A label matcher every series of the rules is selected with, e.g.
    // 'job="compute-optimizer-exporter"'. Empty: the rules assume no job or
    // instance name, and match every exporter Prometheus scrapes.
    selector: '',
    // The label that tells organisations apart ([[organization]] tables);
    // every join matches on it as well as account_id.
    organizationLabel: 'organization',
    // An account Pending this long is stuck (enrollment normally ends in
    // hours): seconds, and the same as a PromQL duration.
    pendingThresholdSeconds: 86400,
    pendingThreshold: '1d',
    // No complete poll for this many poll intervals: the data is stale.
    staleIntervals: 3,
    // How long trusted access must be off, with accounts stuck, to alert.
    trustedAccessFor: '30m',
    // Where the runbooks are: every alert links <runbookBase>#runbook-<alert>.
    runbookBase: 'README.md',

    // Derived: the selector inside braces that have other matchers, and
    // alone after a bare metric name.
    selc:: if self.selector == '' then '' else self.selector + ',',
    sel:: if self.selector == '' then '' else '{' + self.selector + '}',
  },
}
