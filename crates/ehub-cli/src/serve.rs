//! `ehub serve`.

use crate::ServeArgs;
use anyhow::{bail, Context, Result};
use ehub_blob_store::{BlobStore, BlobStoreConfig, Durability};
use ehub_broker::{parse_fsync, Broker, BrokerConfig, Listener, Protocol};
use ehub_broker_blob::Endpoint;
use ehub_partition_log::FsyncPolicy;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    let started = Instant::now();
    if args.print_default_config {
        print!("{}", ehub_broker::DEFAULT_CONFIG_TOML);
        return Ok(());
    }
    let mut cfg = match &args.config {
        Some(p) => BrokerConfig::load(p).with_context(|| format!("loading {}", p.display()))?,
        None => BrokerConfig::default(),
    };
    if let Some(l) = &args.listen {
        cfg.listen = l.parse().with_context(|| format!("--listen '{l}' is not HOST:PORT"))?;
    }
    if let Some(l) = &args.listen_ws {
        cfg.listen_websocket = Some(l.parse().with_context(|| format!("--listen-ws '{l}' is not HOST:PORT"))?);
    }
    if let Some(l) = &args.listen_blob {
        cfg.listen_blob = match l.as_str() {
            "off" | "" => None,
            _ => Some(l.parse().with_context(|| format!("--listen-blob '{l}' is not HOST:PORT or off"))?),
        };
    }
    if let Some(d) = &args.data_dir {
        cfg.core.data_dir = d.clone();
    }
    if let Some(f) = &args.fsync {
        cfg.core.fsync = match parse_fsync(f, 100) {
            Some(p) => p,
            None => bail!("--fsync '{f}' is not one of always, interval, never"),
        };
    }
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("ehub-io").build()?;
    rt.block_on(async move {
        let broker = Broker::open(cfg.clone())
            .with_context(|| format!("opening data directory {}", cfg.core.data_dir.display()))?;
        let bind = |addr: std::net::SocketAddr, protocol: Protocol| async move {
            let socket = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            anyhow::Ok(Listener { socket, protocol })
        };
        let mut listeners = vec![bind(cfg.listen, Protocol::Amqp).await?];
        let addr = listeners[0].socket.local_addr()?;
        let mut ws_addr = "off".to_owned();
        if let Some(ws) = cfg.listen_websocket {
            let l = bind(ws, Protocol::AmqpWebSocket).await?;
            ws_addr = l.socket.local_addr()?.to_string();
            listeners.push(l);
        }
        let shutdown = CancellationToken::new();
        let mut blob_addr = "off".to_owned();
        let mut blob = None;
        if let Some(addr) = cfg.listen_blob {
            let durability = match cfg.core.fsync {
                FsyncPolicy::Always => Durability::Always,
                FsyncPolicy::Interval(d) => Durability::Interval(d),
                FsyncPolicy::Never => Durability::Never,
            };
            let dir = cfg.core.data_dir.join("_blob");
            let store = BlobStore::open(BlobStoreConfig { durability, ..BlobStoreConfig::new(&dir) })
                .with_context(|| format!("opening the Blob store in {}", dir.display()))?;
            let endpoint = Endpoint::new(std::sync::Arc::clone(&store), cfg.blob.clone())?;
            endpoint.create_configured_containers().await?;
            let socket = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the Blob endpoint to {addr} (--listen-blob HOST:PORT or off)"))?;
            blob_addr = socket.local_addr()?.to_string();
            blob = Some((tokio::spawn(endpoint.serve(socket, shutdown.clone())), store));
        }
        let hubs: Vec<String> = cfg.core.hubs.iter().map(|h| format!("{}({})", h.name, h.partitions)).collect();
        tracing::info!(
            listen = %addr,
            listen_websocket = %ws_addr,
            listen_blob = %blob_addr,
            data_dir = %cfg.core.data_dir.display(),
            fsync = %cfg.core.fsync,
            hubs = %hubs.join(","),
            startup_ms = started.elapsed().as_secs_f64() * 1000.0,
            "ehub broker listening"
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            stop.cancel();
        });
        ehub_broker::serve_listeners(broker, listeners, shutdown).await?;
        if let Some((task, store)) = blob {
            task.await??;
            tokio::task::spawn_blocking(move || store.shutdown()).await?;
        }
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
