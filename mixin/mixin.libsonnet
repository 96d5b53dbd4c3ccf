// The compute-optimizer-exporter monitoring mixin (the monitoring-mixins
// layout): prometheusAlerts, prometheusRules and grafanaDashboards, over a
// _config of its own. scripts/gen-mixin.sh renders the shipped files from
// it: deploy/prometheus/rules.yml, deploy/kubernetes/prometheusrule.yaml and
// deploy/grafana/compute-optimizer-exporter.json.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'dashboards.libsonnet')
