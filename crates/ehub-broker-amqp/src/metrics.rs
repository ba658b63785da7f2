//! The AMQP front's metrics: connections, sessions and links open now, and requests refused,
//! by AMQP error condition.

use ehub_broker_core::prometheus_client::metrics::counter::Counter;
use ehub_broker_core::prometheus_client::metrics::family::Family;
use ehub_broker_core::prometheus_client::metrics::gauge::Gauge;
use ehub_broker_core::prometheus_client::registry::Registry;
use ehub_broker_core::Labels;

/// The AMQP front's metric families; share one across listeners.
#[derive(Debug, Clone, Default)]
pub struct AmqpMetrics {
    pub(crate) connections: Gauge,
    pub(crate) sessions: Gauge,
    pub(crate) links: Family<Labels, Gauge>,
    pub(crate) refused: Family<Labels, Counter>,
}

impl AmqpMetrics {
    /// Adds the families to `registry` (names prefixed `ehub_amqp_`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ehub_amqp");
        r.register("connections", "AMQP connections open", self.connections.clone());
        r.register("sessions", "AMQP sessions open", self.sessions.clone());
        r.register("links", "AMQP links attached, by role", self.links.clone());
        r.register(
            "refused",
            "Requests refused (link attaches, deliveries, put-token), by AMQP error condition",
            self.refused.clone(),
        );
    }

    pub(crate) fn link(&self, role: &'static str) -> Gauge {
        self.links.get_or_create_owned(&vec![("role", role.to_owned())])
    }

    pub(crate) fn refuse(&self, condition: &str) {
        self.refused.get_or_create(&vec![("condition", condition.to_owned())]).inc();
    }
}
