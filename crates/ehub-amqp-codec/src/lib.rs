//! # ehub-amqp-codec
//!
//! The AMQP 1.0 type system, performatives, SASL frames, message sections and frames, as a
//! sans-IO library: no sockets, no runtime, just bytes in and values out (and back).
//!
//! It is written for Event Hubs peers:
//! - encoding emits only forms the strictest official client (Python's pure AMQP stack)
//!   accepts: small-ulong descriptors and list8/list32 for every performative and section;
//! - decoding tolerates what real peers send: sections in any order, no body, symbolic
//!   descriptors, described values anywhere;
//! - payloads stay zero-copy (`bytes::Bytes`), sections can be located without decoding
//!   ([`SectionSpans`]) and message annotations replaced by splicing ([`splice_annotations`]);
//! - every size and count is checked against the input before allocating.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use ehub_amqp_codec::{Message, Value, SectionSpans};
//!
//! let mut msg = Message::with_data(Bytes::from_static(b"hello"));
//! msg.application_properties = Some(vec![(Value::from("color"), Value::from("blue"))]);
//! let raw = msg.to_bytes().unwrap();
//!
//! let spans = SectionSpans::scan(&raw).unwrap();
//! assert!(spans.application_properties.is_some());
//! assert_eq!(Message::decode(&raw).unwrap(), msg);
//! ```
#![warn(missing_docs)]

mod decode;
mod definitions;
mod encode;
mod error;
mod frame;
mod message;
mod performative;
mod types;

pub use decode::{array_type_of, code, plain_value_end, Constructor, Decoder, FieldReader, MAX_DEPTH};
pub use definitions::{
    descriptor, descriptor_code, DeliveryState, Error, ReceiverSettleMode, Role, SenderSettleMode, Source, Target,
};
pub use encode::{
    encode_value, put_array, put_binary, put_composite, put_int, put_list, put_long, put_map, put_string, put_symbol,
    put_timestamp, put_uint, put_ulong, FieldWriter,
};
pub use error::{DecodeError, EncodeError};
pub use frame::{
    decode_frame, decode_frame_bytes, encode_empty_frame, encode_frame, encode_sasl_frame, finish_frame,
    peek_frame_size, split_frame, start_frame, Frame, FrameBody, ProtocolHeader, AMQP_HEADER, FRAME_HEADER_SIZE,
    FRAME_TYPE_AMQP, FRAME_TYPE_SASL, MIN_MAX_FRAME_SIZE, SASL_HEADER, TLS_HEADER,
};
pub use message::{
    batch_items, data_section_size, find_annotation, put_data_section, raw_long, raw_text, raw_text_range,
    raw_timestamp, sole_data_section, splice_annotations, AnnotationEntries, Body, Header, Message, Properties,
    RawMapEntries, SectionSpans, BATCH_MESSAGE_FORMAT,
};
pub use performative::{
    decode_transfer_head, encode_transfer, put_transfer_head, Attach, Begin, Close, Detach, Disposition, End, Flow,
    Open, Performative, SaslCode, SaslFrame, Transfer, TransferHead, MAX_DELIVERY_TAG,
};
pub use types::{map_get, Array, ArrayType, Described, Descriptor, Map, Symbol, Timestamp, Value};
