//! `ehub hubs …` and `ehub consumer-groups …`: the broker's HTTP management API
//! (`ehub serve --listen-management`, port 5300 by default), with a SAS token made from the
//! connection string's key.

use crate::{Output, Target};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub(crate) enum HubsCommand {
    /// List the hubs with their partitions and consumer groups.
    List,
    /// Create a hub (kept across restarts).
    Create {
        /// The hub's name.
        name: String,
        /// Partition count.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// A consumer group to create with it besides $Default (repeatable).
        #[arg(long = "consumer-group", value_name = "NAME")]
        consumer_groups: Vec<String>,
        /// Keep its events this many hours (default: the broker's retention).
        #[arg(long, value_name = "HOURS")]
        retention_hours: Option<f64>,
    },
    /// Grow a hub's partition count (increases only, as on the service; kept across
    /// restarts). Producers and processors pick the new partitions up.
    Update {
        /// The hub's name.
        name: String,
        /// The new, larger partition count.
        #[arg(long)]
        partitions: u32,
    },
    /// Delete a hub created at run time, with its events.
    Delete {
        /// The hub's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConsumerGroupsCommand {
    /// List the hub's consumer groups with the receivers connected per partition.
    List,
    /// Create a consumer group in the hub (kept across restarts).
    Create {
        /// The consumer group's name.
        name: String,
    },
    /// Delete a consumer group created at run time; its receivers are disconnected.
    Delete {
        /// The consumer group's name.
        name: String,
    },
}

/// Where the management API is and how to sign for it.
pub(crate) struct Admin {
    base: String,
    token: String,
    rt: tokio::runtime::Runtime,
    timeout: std::time::Duration,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Admin {
    /// From `--management URL`, or port 5300 on the connection string's host.
    pub(crate) fn new(connection_string: &str, management: Option<&str>) -> Result<Admin> {
        let cs = ehub_model::ConnectionString::parse(connection_string).context("parsing the connection string")?;
        let base = match management {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}:5300", cs.host),
        };
        if !base.starts_with("http://") {
            bail!("--management '{base}': only http:// URLs are served by `ehub serve --listen-management`");
        }
        let token = match (&cs.shared_access_signature, &cs.shared_access_key_name, &cs.shared_access_key) {
            (Some(sas), _, _) => sas.clone(),
            (None, Some(name), Some(key)) => {
                let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
                ehub_model::generate_sas_token(&format!("sb://{}/", cs.host), name, key, expiry)
            }
            _ => bail!("the connection string has no SharedAccessKey or SharedAccessSignature to sign management requests with"),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Admin { base, token, rt, timeout: std::time::Duration::from_secs(30), client })
    }

    /// One request, signed; the status and the body.
    fn request(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<(http::StatusCode, Bytes)> {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(http::header::AUTHORIZATION, &self.token)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.rt.block_on(async {
            let resp = tokio::time::timeout(self.timeout, self.client.request(req))
                .await
                .map_err(|_| anyhow!("{method} {url}: no answer in {:?}", self.timeout))?
                .with_context(|| {
                    format!(
                        "{method} {url}: is `ehub serve` running with its management endpoint (--listen-management)?"
                    )
                })?;
            let status = resp.status();
            Ok((status, resp.into_body().collect().await?.to_bytes()))
        })
    }

    /// `GET path`; the body as text (for `/metrics`).
    pub(crate) fn get_text(&self, path: &str) -> Result<String> {
        let (status, bytes) = self.request(http::Method::GET, path, None)?;
        if !status.is_success() {
            bail!("GET {}{path}: {status}", self.base);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// One request; the JSON answer, or the API's error as an error.
    pub(crate) fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, bytes) = self.request(method, path, body)?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().map_or_else(|| status.to_string(), str::to_owned);
            let code = value["error"]["code"].as_str().unwrap_or("");
            return Err(ManagementError { status: status.as_u16(), code: code.to_owned(), message }.into());
        }
        Ok(value)
    }

    /// The broker's hubs, if its management endpoint answers within a second (so that
    /// `--hub` may be left out when there is only one).
    pub(crate) fn try_hub_names(connection_string: &str, management: Option<&str>) -> Option<Vec<String>> {
        let mut admin = Admin::new(connection_string, management).ok()?;
        admin.timeout = std::time::Duration::from_secs(1);
        admin.hub_names().ok()
    }

    /// The hubs' names.
    pub(crate) fn hub_names(&self) -> Result<Vec<String>> {
        let hubs = self.call(http::Method::GET, "/hubs", None)?;
        Ok(hubs.as_array().into_iter().flatten().filter_map(|h| h["name"].as_str().map(str::to_owned)).collect())
    }
}

/// A refusal from the management API.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({status} {code})")]
pub(crate) struct ManagementError {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!("{value}"),
        Output::Text => print!("{}", text(value)),
    }
}

pub(crate) fn hubs(connection_string: &str, management: Option<&str>, output: Output, cmd: &HubsCommand) -> Result<()> {
    let admin = Admin::new(connection_string, management)?;
    match cmd {
        HubsCommand::List => {
            let hubs = admin.call(http::Method::GET, "/hubs", None)?;
            print(output, &hubs, |v| {
                let mut s = format!("{:<24} {:>10}  {:<8} consumer groups\n", "hub", "partitions", "origin");
                for h in v.as_array().into_iter().flatten() {
                    let groups: Vec<&str> =
                        h["consumer_groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    s += &format!(
                        "{:<24} {:>10}  {:<8} {}\n",
                        h["name"].as_str().unwrap_or(""),
                        h["partition_count"],
                        h["origin"].as_str().unwrap_or(""),
                        groups.join(", ")
                    );
                }
                s
            });
        }
        HubsCommand::Create { name, partitions, consumer_groups, retention_hours } => {
            let body = json!({
                "partition_count": partitions,
                "consumer_groups": consumer_groups,
                "retention_hours": retention_hours,
            });
            let hub = admin.call(http::Method::PUT, &format!("/hubs/{}", encode(name)), Some(body))?;
            print(output, &hub, |h| {
                format!("created hub {} with {} partitions\n", h["name"].as_str().unwrap_or(""), h["partition_count"])
            });
        }
        HubsCommand::Update { name, partitions } => {
            let body = json!({ "partition_count": partitions });
            let hub = admin.call(http::Method::PATCH, &format!("/hubs/{}", encode(name)), Some(body))?;
            print(output, &hub, |h| {
                format!("hub {} has {} partitions\n", h["name"].as_str().unwrap_or(""), h["partition_count"])
            });
        }
        HubsCommand::Delete { name } => {
            let v = admin.call(http::Method::DELETE, &format!("/hubs/{}", encode(name)), None)?;
            print(output, &v, |_| format!("deleted hub {name}\n"));
        }
    }
    Ok(())
}

pub(crate) fn consumer_groups(target: &Target, management: Option<&str>, cmd: &ConsumerGroupsCommand) -> Result<()> {
    let admin = Admin::new(&target.connection_string, management)?;
    let hub =
        target.hub.clone().ok_or_else(|| anyhow!("--hub is required (or EntityPath in the connection string)"))?;
    let base = format!("/hubs/{}/consumergroups", encode(&hub));
    match cmd {
        ConsumerGroupsCommand::List => {
            let groups = admin.call(http::Method::GET, &base, None)?;
            print(target.output, &groups, |v| {
                let mut s = format!("{:<24} {:<8} receivers per partition\n", "consumer group", "origin");
                for g in v.as_array().into_iter().flatten() {
                    s += &format!(
                        "{:<24} {:<8} {}\n",
                        g["name"].as_str().unwrap_or(""),
                        g["origin"].as_str().unwrap_or(""),
                        g["receivers_per_partition"]
                    );
                }
                s
            });
        }
        ConsumerGroupsCommand::Create { name } => {
            let g = admin.call(http::Method::PUT, &format!("{base}/{}", encode(name)), None)?;
            print(target.output, &g, |_| format!("created consumer group {name} in {hub}\n"));
        }
        ConsumerGroupsCommand::Delete { name } => {
            let v = admin.call(http::Method::DELETE, &format!("{base}/{}", encode(name)), None)?;
            print(target.output, &v, |_| format!("deleted consumer group {name} of {hub}\n"));
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum FaultCommand {
    /// Detach the producer and consumer links of --hub (every hub without it), or of one
    /// partition, with a condition.
    Detach {
        /// Only this partition's links.
        #[arg(long)]
        partition: Option<String>,
        /// link-stolen (not retried by clients), detach-forced (reattach) or server-busy.
        #[arg(long, default_value = "detach-forced")]
        condition: String,
    },
    /// Close every AMQP connection (amqp:connection:forced).
    CloseConnections,
    /// Treat every token as expired now: links whose claims lapse are detached.
    ExpireTokens,
    /// Answer sends (to --hub, or every hub) with com.microsoft:server-busy for a while.
    ServerBusy {
        /// How long.
        #[arg(long)]
        seconds: f64,
    },
    /// Add a delay before every fsync of the partition logs for a while.
    FsyncLatency {
        /// The delay.
        #[arg(long)]
        millis: u64,
        /// How long.
        #[arg(long)]
        seconds: f64,
    },
    /// Add a delay before every write to every connection for a while.
    FrameLatency {
        /// The delay.
        #[arg(long)]
        millis: u64,
        /// How long.
        #[arg(long)]
        seconds: f64,
    },
    /// Shorten the service's idle rules for a while: links idle for --link-idle-seconds are
    /// detached (amqp:link:detach-forced; normally 30 minutes), connections without links for
    /// --connection-idle-seconds are closed (amqp:connection:forced; normally 300 s).
    IdleTimeouts {
        /// Link idle timeout during the fault.
        #[arg(long, default_value_t = 5.0)]
        link_idle_seconds: f64,
        /// Empty connection timeout during the fault.
        #[arg(long, default_value_t = 5.0)]
        connection_idle_seconds: f64,
        /// How long.
        #[arg(long)]
        seconds: f64,
    },
    /// List the timed faults in force.
    List,
    /// End one timed fault early, or all of them.
    Clear {
        /// The fault's id (from `list`); all without it.
        id: Option<u64>,
    },
}

pub(crate) fn fault(
    connection_string: &str,
    management: Option<&str>,
    hub: Option<&str>,
    output: Output,
    cmd: &FaultCommand,
) -> Result<()> {
    let admin = Admin::new(connection_string, management)?;
    let inject = |body: Value| admin.call(http::Method::POST, "/faults", Some(body));
    let v = match cmd {
        FaultCommand::Detach { partition, condition } => {
            inject(json!({"kind": "detach", "hub": hub, "partition": partition, "condition": condition}))?
        }
        FaultCommand::CloseConnections => inject(json!({"kind": "close-connections"}))?,
        FaultCommand::ExpireTokens => inject(json!({"kind": "expire-tokens"}))?,
        FaultCommand::ServerBusy { seconds } => inject(json!({"kind": "server-busy", "hub": hub, "seconds": seconds}))?,
        FaultCommand::FsyncLatency { millis, seconds } => {
            inject(json!({"kind": "fsync-latency", "millis": millis, "seconds": seconds}))?
        }
        FaultCommand::FrameLatency { millis, seconds } => {
            inject(json!({"kind": "frame-latency", "millis": millis, "seconds": seconds}))?
        }
        FaultCommand::IdleTimeouts { link_idle_seconds, connection_idle_seconds, seconds } => inject(json!({
            "kind": "idle-timeouts",
            "link_idle_seconds": link_idle_seconds,
            "connection_idle_seconds": connection_idle_seconds,
            "seconds": seconds
        }))?,
        FaultCommand::List => admin.call(http::Method::GET, "/faults", None)?,
        FaultCommand::Clear { id } => {
            let path = id.map_or_else(|| "/faults".to_owned(), |id| format!("/faults/{id}"));
            admin.call(http::Method::DELETE, &path, None)?
        }
    };
    print(output, &v, |v| {
        if let Some(active) = v["active"].as_array() {
            let mut s = String::new();
            for f in active {
                s += &format!(
                    "{:>4}  {:<14} {}\n",
                    f["id"],
                    f["kind"].as_str().unwrap_or(""),
                    f["description"].as_str().unwrap_or("")
                );
            }
            if active.is_empty() {
                s += "no timed fault in force\n";
            }
            s
        } else if let Some(n) = v["connections"].as_u64() {
            format!("{}: sent to {n} connections\n", v["kind"].as_str().unwrap_or(""))
        } else if v.get("ended").is_some() {
            format!("ended {}\n", v["ended"])
        } else {
            format!("fault {} in force: {}\n", v["id"], v["description"].as_str().unwrap_or(""))
        }
    });
    Ok(())
}
