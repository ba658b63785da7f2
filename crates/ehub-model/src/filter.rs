//! Event positions and the `apache.org:selector-filter:string` expressions that carry them
//! (reference §10.2).

use ehub_amqp_codec::{Described, Descriptor, Symbol, Value};
use thiserror::Error;

/// Name (and symbolic descriptor) of the selector filter.
pub const SELECTOR_FILTER_NAME: &str = "apache.org:selector-filter:string";
/// Numeric descriptor used by the Rust, JS and Go SDKs.
pub const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;
/// Numeric descriptor carried by the old .NET filter class.
pub const SELECTOR_FILTER_LEGACY_CODE: u64 = 0x0000_0137_0000_000A;

/// Where a receiver starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPosition {
    /// From the first retained event.
    Earliest,
    /// Only events enqueued after the receiver attached.
    Latest,
    /// By offset (opaque string; ehub offsets are decimal positions).
    Offset {
        /// The offset text.
        value: String,
        /// Include the event at that offset.
        inclusive: bool,
    },
    /// By sequence number.
    SequenceNumber {
        /// The sequence number.
        value: i64,
        /// Include the event with that number.
        inclusive: bool,
    },
    /// By enqueued time (Unix milliseconds).
    EnqueuedTime {
        /// Milliseconds since the Unix epoch.
        millis: i64,
        /// Include events enqueued exactly then.
        inclusive: bool,
    },
}

/// A selector that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid selector filter '{expression}': {reason}")]
pub struct FilterError {
    /// The expression as received.
    pub expression: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl FilterError {
    /// Always `argument`.
    pub fn kind(&self) -> &'static str {
        "argument"
    }
    /// Never transient.
    pub fn is_transient(&self) -> bool {
        false
    }
}

impl EventPosition {
    /// The selector expression for this position, in the form the Python SDK sends.
    pub fn to_selector(&self) -> String {
        let op = |inclusive: bool| if inclusive { ">=" } else { ">" };
        match self {
            EventPosition::Earliest => "amqp.annotation.x-opt-offset > '-1'".into(),
            EventPosition::Latest => "amqp.annotation.x-opt-offset > '@latest'".into(),
            EventPosition::Offset { value, inclusive } => {
                format!("amqp.annotation.x-opt-offset {} '{value}'", op(*inclusive))
            }
            EventPosition::SequenceNumber { value, inclusive } => {
                format!("amqp.annotation.x-opt-sequence-number {} '{value}'", op(*inclusive))
            }
            EventPosition::EnqueuedTime { millis, inclusive } => {
                format!("amqp.annotation.x-opt-enqueued-time {} '{millis}'", op(*inclusive))
            }
        }
    }

    /// The filter-set entry (symbol key, described string value with the numeric descriptor
    /// the Rust/JS/Go SDKs use).
    pub fn to_filter_entry(&self) -> (Value, Value) {
        (
            Value::Symbol(Symbol::from(SELECTOR_FILTER_NAME)),
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Code(SELECTOR_FILTER_CODE),
                value: Value::String(self.to_selector()),
            })),
        )
    }

    /// Finds and parses the selector in a source's filter set. `Ok(None)` when there is none.
    pub fn from_filter_set(filter: &[(Value, Value)]) -> Result<Option<Self>, FilterError> {
        for (k, v) in filter {
            let key_matches = match k {
                Value::Symbol(s) => s.as_str() == SELECTOR_FILTER_NAME,
                Value::String(s) => s == SELECTOR_FILTER_NAME,
                _ => false,
            };
            let (expr, desc_ok) = match v {
                Value::Described(d) => {
                    let ok = match &d.descriptor {
                        Descriptor::Code(c) => *c == SELECTOR_FILTER_CODE || *c == SELECTOR_FILTER_LEGACY_CODE,
                        Descriptor::Symbol(s) => s.as_str() == SELECTOR_FILTER_NAME,
                        Descriptor::Other(_) => false,
                    };
                    (d.value.as_text(), ok)
                }
                _ => (None, false),
            };
            if key_matches || desc_ok {
                let expr = expr.ok_or(FilterError {
                    expression: format!("{v:?}"),
                    reason: "selector filter value is not a described string",
                })?;
                return Self::parse_selector(expr).map(Some);
            }
        }
        Ok(None)
    }

    /// Parses a selector expression. Tolerates missing whitespace, unquoted values, any case and
    /// `=` (read as `>=`).
    pub fn parse_selector(expr: &str) -> Result<Self, FilterError> {
        let bad = |reason| FilterError { expression: expr.to_owned(), reason };
        let s = expr.trim();
        let lower = s.to_ascii_lowercase();
        let rest = lower.strip_prefix("amqp.annotation.").ok_or(bad("expected amqp.annotation.<field>"))?;
        let fields = ["x-opt-sequence-number", "x-opt-enqueuedtimeutc", "x-opt-enqueued-time", "x-opt-offset"];
        let field = fields.iter().find(|f| rest.starts_with(**f)).ok_or(bad("unknown annotation field"))?;
        let rest = rest[field.len()..].trim_start();
        let (inclusive, rest) = if let Some(r) = rest.strip_prefix(">=") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (false, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (true, r)
        } else {
            return Err(bad("expected > or >="));
        };
        let rest = rest.trim();
        // Take the original-case value from the same position.
        let value_start = s.len() - rest.len();
        let raw = s[value_start..].trim();
        let value = if let Some(q) = raw.strip_prefix('\'') {
            q.strip_suffix('\'').ok_or(bad("unterminated quote"))?
        } else {
            if raw.contains(char::is_whitespace) || raw.is_empty() {
                return Err(bad("bad value"));
            }
            raw
        };
        match *field {
            "x-opt-offset" => match value {
                "-1" => Ok(EventPosition::Earliest),
                v if v.eq_ignore_ascii_case("@latest") => Ok(EventPosition::Latest),
                v => Ok(EventPosition::Offset { value: v.to_owned(), inclusive }),
            },
            "x-opt-sequence-number" => value
                .parse::<i64>()
                .map(|value| EventPosition::SequenceNumber { value, inclusive })
                .map_err(|_| bad("sequence number is not an integer")),
            _ => value
                .parse::<i64>()
                .map(|millis| EventPosition::EnqueuedTime { millis, inclusive })
                .map_err(|_| bad("enqueued time is not an integer (milliseconds)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_form_parses() {
        use EventPosition::*;
        let cases = [
            ("amqp.annotation.x-opt-offset > '-1'", Earliest),
            ("amqp.annotation.x-opt-offset > '@latest'", Latest),
            ("amqp.annotation.x-opt-offset >= '123'", Offset { value: "123".into(), inclusive: true }),
            ("amqp.annotation.x-opt-offset > 123", Offset { value: "123".into(), inclusive: false }),
            ("amqp.annotation.x-opt-sequence-number >'12345'", SequenceNumber { value: 12345, inclusive: false }),
            ("amqp.annotation.x-opt-sequence-number >='5'", SequenceNumber { value: 5, inclusive: true }),
            ("AMQP.ANNOTATION.X-OPT-SEQUENCE-NUMBER = '5'", SequenceNumber { value: 5, inclusive: true }),
            (
                "amqp.annotation.x-opt-enqueued-time > '1700000000000'",
                EnqueuedTime { millis: 1_700_000_000_000, inclusive: false },
            ),
            ("amqp.annotation.x-opt-enqueuedtimeutc > 17", EnqueuedTime { millis: 17, inclusive: false }),
        ];
        for (expr, want) in cases {
            assert_eq!(EventPosition::parse_selector(expr).unwrap(), want, "{expr}");
        }
        for bad in [
            "",
            "x-opt-offset > 1",
            "amqp.annotation.x-opt-offset < '1'",
            "amqp.annotation.x-opt-sequence-number > 'x'",
            "amqp.annotation.x-opt-offset > '1",
        ] {
            assert!(EventPosition::parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_three_descriptor_forms() {
        for d in [
            Descriptor::Code(SELECTOR_FILTER_CODE),
            Descriptor::Code(SELECTOR_FILTER_LEGACY_CODE),
            Descriptor::Symbol(Symbol::from(SELECTOR_FILTER_NAME)),
        ] {
            let set = vec![(
                Value::Symbol(Symbol::from(SELECTOR_FILTER_NAME)),
                Value::Described(Box::new(Described {
                    descriptor: d,
                    value: Value::from("amqp.annotation.x-opt-offset > '-1'"),
                })),
            )];
            assert_eq!(EventPosition::from_filter_set(&set).unwrap(), Some(EventPosition::Earliest));
        }
        assert_eq!(EventPosition::from_filter_set(&[]).unwrap(), None);
    }

    #[test]
    fn round_trip_through_selector() {
        for p in [
            EventPosition::Earliest,
            EventPosition::Latest,
            EventPosition::Offset { value: "42".into(), inclusive: true },
            EventPosition::SequenceNumber { value: -3, inclusive: false },
            EventPosition::EnqueuedTime { millis: 99, inclusive: true },
        ] {
            assert_eq!(EventPosition::parse_selector(&p.to_selector()).unwrap(), p);
        }
    }
}
