//! A client's dialect: the parts of the frames it sends that the service cares about
//! (addresses, token audiences and types, management requests, settle modes, link properties,
//! filters and capabilities), with random names removed, so that two clients' dialects can be
//! compared as sets.

use crate::Recorded;
use ehub_amqp_codec::{Descriptor, Message, Performative, Role, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The parts of a client's frames that the service cares about, with random names removed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    /// A link attach.
    Attach {
        sender: bool,
        address: String,
        snd_settle_mode: String,
        rcv_settle_mode: String,
        properties: Vec<(String, String)>,
        filters: Vec<(String, String, String)>,
        desired_capabilities: Vec<String>,
    },
    /// A CBS put-token request.
    PutToken { audience: String, token_type: String, operation: String, to: String },
    /// A management request.
    Management { operation: String, entity_type: String, name: String, to: String, partition: Option<String> },
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Symbol(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

fn descriptor(d: &Descriptor) -> String {
    match d {
        Descriptor::Code(c) => format!("{c:#x}"),
        Descriptor::Symbol(s) => s.as_str().to_string(),
        Descriptor::Other(v) => format!("{v:?}"),
    }
}

/// The dialect items of one client's recorded frames. Link names and reply addresses are
/// random, so they are left out; the filter's value is kept (it encodes the position).
pub fn dialect(frames: &[Recorded]) -> BTreeSet<Item> {
    let mut links: HashMap<(usize, u16, u32), (bool, String)> = HashMap::new();
    let mut items = BTreeSet::new();
    for f in frames {
        match &f.performative {
            Performative::Attach(a) => {
                let sender = a.role == Role::Sender;
                let address = if sender {
                    a.target.as_ref().and_then(|t| t.address.clone())
                } else {
                    a.source.as_ref().and_then(|s| s.address.clone())
                }
                .unwrap_or_default();
                links.insert((f.conn, f.channel, a.handle), (sender, address.clone()));
                let mut properties: Vec<(String, String)> = a
                    .properties
                    .iter()
                    .flatten()
                    // The receiver's name is random; its presence is what matters. The SDK's key has
                    // a typo (`com.microsoft.com:`); we send the documented `com.microsoft:` key,
                    // as the JavaScript and .NET SDKs do, and the service reads both.
                    .map(|(k, v)| {
                        let k = text(k);
                        if k.ends_with(":receiver-name") {
                            ("receiver-name".to_string(), "<name>".to_string())
                        } else {
                            (k, format!("{v:?}"))
                        }
                    })
                    .collect();
                properties.sort();
                let mut filters: Vec<(String, String, String)> = Vec::new();
                if let Some(map) = a.source.as_ref().and_then(|s| s.filter.as_ref()) {
                    for (k, v) in map {
                        if let Value::Described(d) = v {
                            filters.push((text(k), descriptor(&d.descriptor), text(&d.value)));
                        } else {
                            filters.push((text(k), "<undescribed>".into(), text(v)));
                        }
                    }
                }
                let mut desired_capabilities: Vec<String> =
                    a.desired_capabilities.iter().map(|s| s.as_str().to_string()).collect();
                desired_capabilities.sort();
                items.insert(Item::Attach {
                    sender,
                    address,
                    snd_settle_mode: format!("{:?}", a.snd_settle_mode),
                    rcv_settle_mode: format!("{:?}", a.rcv_settle_mode),
                    properties,
                    filters,
                    desired_capabilities,
                });
            }
            Performative::Transfer(t) => {
                let Some((true, address)) = links.get(&(f.conn, f.channel, t.handle)).cloned() else { continue };
                let Ok(m) = Message::decode(&f.payload) else { continue };
                let app: HashMap<String, String> =
                    m.application_properties.iter().flatten().map(|(k, v)| (text(k), text(v))).collect();
                let to = m.properties.as_ref().and_then(|p| p.to.clone()).unwrap_or_default();
                if address == "$cbs" {
                    items.insert(Item::PutToken {
                        audience: app.get("name").cloned().unwrap_or_default(),
                        token_type: app.get("type").cloned().unwrap_or_default(),
                        operation: app.get("operation").cloned().unwrap_or_default(),
                        to,
                    });
                } else if address == "$management" {
                    items.insert(Item::Management {
                        operation: app.get("operation").cloned().unwrap_or_default(),
                        entity_type: app.get("type").cloned().unwrap_or_default(),
                        name: app.get("name").cloned().unwrap_or_default(),
                        to,
                        partition: app.get("partition").cloned(),
                    });
                }
            }
            _ => {}
        }
    }
    items
}

/// What kind of node a link address names, so that the same link of two clients can be paired
/// even when their addresses are spelled differently.
fn link_kind(address: &str) -> &'static str {
    let path = address.split_once("://").map_or(address, |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
    let lower = path.to_ascii_lowercase();
    match lower.as_str() {
        "$cbs" => "$cbs",
        "$management" => "$management",
        p if p.contains("/consumergroups/") => "consumer partition",
        p if p.contains("/partitions/") => "partition",
        _ => "hub",
    }
}

/// A dialect split into facets: `(what, facet) -> value`, e.g.
/// `("receiver on consumer partition", "filters") -> "..."`. Two clients' facets can be compared
/// one by one, which tells where official SDKs differ from each other and which choice ours made.
pub fn facets(items: &BTreeSet<Item>) -> BTreeMap<(String, &'static str), String> {
    let mut out = BTreeMap::new();
    let mut audiences: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        match item {
            Item::Attach {
                sender,
                address,
                snd_settle_mode,
                rcv_settle_mode,
                properties,
                filters,
                desired_capabilities,
            } => {
                let what = format!("{} on {}", if *sender { "sender" } else { "receiver" }, link_kind(address));
                out.insert((what.clone(), "address"), address.clone());
                out.insert((what.clone(), "snd-settle-mode"), snd_settle_mode.clone());
                out.insert((what.clone(), "rcv-settle-mode"), rcv_settle_mode.clone());
                out.insert((what.clone(), "properties"), format!("{properties:?}"));
                out.insert(
                    (what.clone(), "filter form"),
                    format!("{:?}", filters.iter().map(|f| (&f.0, &f.1)).collect::<Vec<_>>()),
                );
                out.insert(
                    (what.clone(), "filter expression"),
                    format!("{:?}", filters.iter().map(|f| &f.2).collect::<Vec<_>>()),
                );
                out.insert((what, "desired capabilities"), format!("{desired_capabilities:?}"));
            }
            Item::PutToken { audience, token_type, operation, to } => {
                audiences
                    .entry(format!("put-token {operation} {token_type} to '{to}'"))
                    .or_default()
                    .push(audience.clone());
            }
            Item::Management { operation, entity_type, name, to, partition } => {
                let what = format!("management {operation} {entity_type}");
                out.insert((what.clone(), "name"), name.clone());
                out.insert((what.clone(), "to"), to.clone());
                out.insert((what, "partition"), format!("{partition:?}"));
            }
        }
    }
    for (what, mut a) in audiences {
        a.sort();
        out.insert((what, "audiences"), a.join(" "));
    }
    out
}
