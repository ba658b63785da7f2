//! The `$management` node: READ of hub and partition properties (reference §8).

use ehub_amqp_codec::{map_get, Array, Message, Symbol, Timestamp, Value};
use ehub_broker_core::Broker;
use ehub_model::{conditions, nodes, CE_ZERO_MILLIS};
use std::time::{SystemTime, UNIX_EPOCH};

/// A response message with `status-code` (int), `status-description` and a body value.
pub(crate) fn status_message(code: i32, description: &str, condition: Option<&str>, body: Value) -> Message {
    let mut app = vec![
        (Value::from("status-code"), Value::Int(code)),
        (Value::from("status-description"), Value::from(description)),
    ];
    if let Some(c) = condition {
        app.push((Value::from("error-condition"), Value::Symbol(Symbol::from(c))));
    }
    Message { application_properties: Some(app), body: ehub_amqp_codec::Body::Value(body), ..Default::default() }
}

fn s(k: &str) -> Value {
    Value::String(k.to_owned())
}

/// Answers a management request.
pub(crate) fn handle_read(broker: &Broker, app: &[(Value, Value)]) -> Message {
    let get = |k: &str| map_get(app, k).and_then(|v| v.as_text()).unwrap_or_default().to_owned();
    let (op, ty, name) = (get("operation"), get("type"), get("name"));
    if !op.eq_ignore_ascii_case("READ") {
        return status_message(
            501,
            &format!("The operation '{op}' is not supported."),
            Some(conditions::NOT_IMPLEMENTED),
            Value::Null,
        );
    }
    let Some(hub) = broker.hub(&name) else {
        return status_message(
            404,
            &format!("The messaging entity 'sb://ehub/{name}' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions."),
            Some(conditions::NOT_FOUND),
            Value::Null,
        );
    };
    match ty.as_str() {
        nodes::EVENTHUB_TYPE => {
            let body = vec![
                (s("name"), Value::String(hub.name.clone())),
                (s("type"), s(nodes::EVENTHUB_TYPE)),
                (s("created_at"), Value::Timestamp(Timestamp(hub.created_at))),
                (s("partition_count"), Value::Int(hub.partitions.len() as i32)),
                (s("partition_ids"), Value::Array(Array::strings(hub.partition_ids.iter().cloned()))),
                (s("georeplication_factor"), Value::Int(1)),
            ];
            status_message(200, "OK", None, Value::Map(body))
        }
        nodes::PARTITION_TYPE => {
            let pid = get("partition");
            let Some(idx) = hub.partition_index(&pid) else {
                return status_message(
                    404,
                    &format!("The partition '{pid}' does not exist in Event Hub '{}'.", hub.name),
                    Some(conditions::NOT_FOUND),
                    Value::Null,
                );
            };
            let info = hub.partitions[idx].info();
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let body = vec![
                (s("name"), Value::String(hub.name.clone())),
                (s("type"), s(nodes::PARTITION_TYPE)),
                (s("partition"), Value::String(pid)),
                (s("begin_sequence_number"), Value::Long(info.begin_sequence_number)),
                (s("last_enqueued_sequence_number"), Value::Long(info.last_sequence_number)),
                (s("last_enqueued_offset"), Value::String(info.last_offset.map_or("-1".into(), |o| o.to_string()))),
                (
                    s("last_enqueued_time_utc"),
                    Value::Timestamp(Timestamp(info.last_enqueued_time.unwrap_or(CE_ZERO_MILLIS))),
                ),
                (s("is_partition_empty"), Value::Bool(info.is_empty)),
                (s("runtime_info_retrieval_time_utc"), Value::Timestamp(Timestamp(now))),
                (s("begin_sequence_number_epoch"), Value::Long(-1)),
                (s("last_enqueued_sequence_number_epoch"), Value::Long(-1)),
            ];
            status_message(200, "OK", None, Value::Map(body))
        }
        other => status_message(
            400,
            &format!("The entity type '{other}' is not supported."),
            Some(conditions::NOT_IMPLEMENTED),
            Value::Null,
        ),
    }
}
