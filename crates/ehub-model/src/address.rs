//! Entity addresses as the SDKs write them (reference §6).

/// What a link address points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityAddress {
    /// `$cbs`.
    Cbs,
    /// `$management`.
    Management,
    /// `<hub>`: hub-level send.
    Hub {
        /// Hub name as written.
        hub: String,
    },
    /// `<hub>/Partitions/<id>`: partition send.
    Partition {
        /// Hub name as written.
        hub: String,
        /// Partition id.
        partition: String,
    },
    /// `<hub>/ConsumerGroups/<cg>/Partitions/<id>`: receive.
    Receive {
        /// Hub name as written.
        hub: String,
        /// Consumer group as written.
        consumer_group: String,
        /// Partition id.
        partition: String,
    },
}

impl EntityAddress {
    /// Parses any of the observed forms: full URL, relative, leading slash; keywords and names
    /// case-insensitive (names are returned as written).
    pub fn parse(address: &str) -> Option<Self> {
        let path = match address.find("://") {
            Some(i) => {
                let rest = &address[i + 3..];
                match rest.find('/') {
                    Some(j) => &rest[j..],
                    None => "",
                }
            }
            None => address,
        };
        let path = path.trim_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        if let Some(last) = parts.last() {
            if last.eq_ignore_ascii_case("$cbs") {
                return Some(EntityAddress::Cbs);
            }
            if last.eq_ignore_ascii_case("$management") {
                return Some(EntityAddress::Management);
            }
        }
        match parts.as_slice() {
            [hub] if !hub.is_empty() => Some(EntityAddress::Hub { hub: hub.to_string() }),
            [hub, kw, p] if kw.eq_ignore_ascii_case("partitions") && !hub.is_empty() && !p.is_empty() => {
                Some(EntityAddress::Partition { hub: hub.to_string(), partition: p.to_string() })
            }
            [hub, kw1, cg, kw2, p]
                if kw1.eq_ignore_ascii_case("consumergroups")
                    && kw2.eq_ignore_ascii_case("partitions")
                    && !hub.is_empty()
                    && !cg.is_empty()
                    && !p.is_empty() =>
            {
                Some(EntityAddress::Receive {
                    hub: hub.to_string(),
                    consumer_group: cg.to_string(),
                    partition: p.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The hub named by the address, if any.
    pub fn hub(&self) -> Option<&str> {
        match self {
            EntityAddress::Hub { hub } | EntityAddress::Partition { hub, .. } | EntityAddress::Receive { hub, .. } => {
                Some(hub)
            }
            _ => None,
        }
    }

    /// The relative path of the entity (`hub`, `hub/Partitions/p`, ...), as the audience suffix.
    pub fn path(&self) -> String {
        match self {
            EntityAddress::Cbs => "$cbs".into(),
            EntityAddress::Management => "$management".into(),
            EntityAddress::Hub { hub } => hub.clone(),
            EntityAddress::Partition { hub, partition } => format!("{hub}/Partitions/{partition}"),
            EntityAddress::Receive { hub, consumer_group, partition } => {
                format!("{hub}/ConsumerGroups/{consumer_group}/Partitions/{partition}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_observed_forms() {
        let recv =
            EntityAddress::Receive { hub: "eh1".into(), consumer_group: "$Default".into(), partition: "3".into() };
        for a in [
            "amqps://ns.servicebus.windows.net/eh1/ConsumerGroups/$Default/Partitions/3",
            "eh1/ConsumerGroups/$Default/Partitions/3",
            "/eh1/consumergroups/$Default/partitions/3",
            "amqp://localhost:5672/eh1/ConsumerGroups/$Default/Partitions/3/",
        ] {
            assert_eq!(EntityAddress::parse(a), Some(recv.clone()), "{a}");
        }
        assert_eq!(EntityAddress::parse("amqps://h/eh1"), Some(EntityAddress::Hub { hub: "eh1".into() }));
        assert_eq!(
            EntityAddress::parse("/eh1/Partitions/0"),
            Some(EntityAddress::Partition { hub: "eh1".into(), partition: "0".into() })
        );
        assert_eq!(EntityAddress::parse("$cbs"), Some(EntityAddress::Cbs));
        assert_eq!(EntityAddress::parse("amqps://ns/eh1/$management"), Some(EntityAddress::Management));
        assert_eq!(EntityAddress::parse("eh1/Bogus/0"), None);
        assert_eq!(EntityAddress::parse(""), None);
    }
}
