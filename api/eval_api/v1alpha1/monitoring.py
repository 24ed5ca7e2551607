"""An EvalSuite's spec.monitoring: ServiceMonitors, a PodMonitor, alerts and a Grafana dashboard."""

from __future__ import annotations

from pydantic import Field

from eval_api.v1alpha1.common import DECIMAL_PATTERN, DEFAULTED_OBJECT, ApiModel

DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"  # a Prometheus duration, as ServiceMonitors take


class GrafanaDashboardSpec(ApiModel):
    """A Grafana dashboard of the suite, as a ConfigMap for Grafana's dashboard sidecar."""

    enabled: bool = Field(default=True, description="Make the ConfigMap (default true).")
    labels: dict[str, str] | None = Field(
        default=None,
        max_length=16,
        description=(
            'Labels the sidecar looks for (default grafana_dashboard: "1", '
            "kube-prometheus-stack's)."
        ),
    )


class MonitoringSpec(ApiModel):
    """Prometheus Operator objects for the suite: ServiceMonitors (dashboard, store and cache
    exporters), a PodMonitor (runners), a PrometheusRule with the suite's alerts, and a
    Grafana dashboard."""

    enabled: bool = Field(
        default=False,
        description=(
            "Make them (default false). Without the Prometheus Operator's CRDs in the cluster "
            "MonitoringReady is False, reason PrometheusOperatorNotInstalled, and the rest of "
            "the suite runs; installing them later is noticed without a restart."
        ),
    )
    labels: dict[str, str] | None = Field(
        default=None,
        max_length=16,
        description=(
            "Labels of the ServiceMonitors, PodMonitor and PrometheusRule, for the Prometheus "
            "selectors (kube-prometheus-stack: release: <its release name>)."
        ),
    )
    interval: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        max_length=16,
        description="Scrape interval (a Prometheus duration, default 30s).",
    )
    exporters: bool = Field(
        default=True,
        description=(
            "Run postgres_exporter and redis_exporter as sidecars of the managed store and "
            "cache (pinned images; default true)."
        ),
    )
    cost_alert_usd_per_hour: str = Field(
        default="10",
        alias="costAlertUSDPerHour",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description=(
            "The EvalSuiteHighCost alert fires when the suite's runners spend more than this many "
            'dollars an hour (a decimal string, default "10").'
        ),
    )
    grafana_dashboard: GrafanaDashboardSpec = Field(
        default_factory=GrafanaDashboardSpec,
        description="The Grafana dashboard ConfigMap.",
        json_schema_extra=DEFAULTED_OBJECT,
    )
