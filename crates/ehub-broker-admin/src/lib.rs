//! # ehub-broker-admin
//!
//! The broker's HTTP management front, a front on [`ehub_broker_core`] like the AMQP and Blob
//! ones: `GET /health` as Microsoft's emulator answers it on its port 5300, and a JSON API to
//! list, create and delete hubs and consumer groups while the broker runs. Requests other than
//! the health probe carry a SAS token with Manage rights in `Authorization` (the same tokens
//! the AMQP side verifies), unless the configuration turns auth off.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `{"status":"healthy",…}`, or 503 `{"status":"unhealthy",…}` |
//! | `GET /hubs` | 200, every hub |
//! | `GET /hubs/{hub}` | 200, one hub; 404 |
//! | `PUT /hubs/{hub}` `{"partition_count":4,"consumer_groups":["a"]}` | 201; 409 if it exists |
//! | `DELETE /hubs/{hub}` | 200; 404; 409 for a hub of the configuration file |
//! | `GET /hubs/{hub}/consumergroups` | 200 |
//! | `PUT /hubs/{hub}/consumergroups/{name}` | 201; 409 if it exists |
//! | `DELETE /hubs/{hub}/consumergroups/{name}` | 200; 404; 409 for `$Default` and configured groups |
//! | `GET /metrics` | the Prometheus registry given with [`Endpoint::with_metrics`] (no token) |
//! | `POST /faults` `{"kind":"detach",…}` | 201: a fault injected (see the broker guide) |
//! | `GET /faults`, `DELETE /faults[/{id}]` | the timed faults in force; end them |
//!
//! Errors are `{"error":{"code":"…","message":"…"}}` with the status above, 400 for a bad
//! name or body, 401 without a valid token, 403 without Manage rights.
//!
//! ```no_run
//! # async fn run(broker: std::sync::Arc<ehub_broker_core::Broker>) -> std::io::Result<()> {
//! use ehub_broker_admin::{AdminConfig, Endpoint};
//! let endpoint = Endpoint::new(broker, AdminConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5300").await?;
//! endpoint.serve(listener, tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod api;
mod server;

pub use server::{AdminAuth, AdminConfig, Endpoint};
