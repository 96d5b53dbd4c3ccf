// The Grafana dashboard. Its queries follow the dashboard's own variables
// (datasource, cluster, job, organization, instance, OU, team), as mixin
// dashboards do, so nothing of $._config is needed in them.
{
  grafanaDashboards+:: {
    'compute-optimizer-exporter.json': import 'dashboards/compute-optimizer-exporter.json',
  },
}
