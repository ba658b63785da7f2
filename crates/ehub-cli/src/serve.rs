//! `ehub serve`.

use crate::ServeArgs;
use anyhow::{bail, Context, Result};
use ehub_broker::{parse_advertised, parse_fsync, parse_listen, BrokerConfig, TlsSource};
use std::time::Instant;

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
    let optional_addr =
        |flag: &str, l: &str| parse_listen(l).with_context(|| format!("--{flag} '{l}' is not HOST:PORT or off"));
    if let Some(l) = &args.listen_blob {
        cfg.listen_blob = optional_addr("listen-blob", l)?;
    }
    if let Some(l) = &args.listen_management {
        cfg.listen_management = optional_addr("listen-management", l)?;
    }
    if let Some(l) = &args.listen_kafka {
        cfg.listen_kafka = optional_addr("listen-kafka", l)?;
    }
    if let Some(a) = &args.kafka_advertised {
        cfg.kafka.advertised = parse_advertised(a).map_err(anyhow::Error::msg).context("--kafka-advertised")?;
    }
    if let Some(l) = &args.listen_kafka_tls {
        cfg.listen_kafka_tls = optional_addr("listen-kafka-tls", l)?;
    }
    if let Some(a) = &args.kafka_advertised_tls {
        cfg.kafka.advertised_tls = parse_advertised(a).map_err(anyhow::Error::msg).context("--kafka-advertised-tls")?;
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => cfg.tls.source = TlsSource::Files { cert: cert.clone(), key: key.clone() },
        _ if args.tls_self_signed => cfg.tls.source = TlsSource::SelfSigned,
        _ => {}
    }
    if let Some(l) = &args.listen_tls {
        cfg.tls.listen = optional_addr("listen-tls", l)?;
    }
    if let Some(l) = &args.listen_wss {
        cfg.tls.listen_websocket = Some(l.parse().with_context(|| format!("--listen-wss '{l}' is not HOST:PORT"))?);
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
        let data_dir = cfg.core.data_dir.clone();
        let (fsync, hubs) = (cfg.core.fsync, cfg.core.hubs.clone());
        let running =
            ehub_broker::start(cfg).await.with_context(|| format!("starting with data in {}", data_dir.display()))?;
        let hubs: Vec<String> = hubs.iter().map(|h| format!("{}({})", h.name, h.partitions)).collect();
        let off = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(
            listen = %running.amqp,
            listen_websocket = %off(running.websocket),
            listen_blob = %off(running.blob),
            listen_tls = %off(running.tls),
            listen_wss = %off(running.websocket_tls),
            listen_management = %off(running.management),
            listen_kafka = %off(running.kafka),
            listen_kafka_tls = %off(running.kafka_tls),
            data_dir = %data_dir.display(),
            fsync = %fsync,
            hubs = %hubs.join(","),
            startup_ms = started.elapsed().as_secs_f64() * 1000.0,
            "ehub broker listening"
        );
        if let Some(ca) = &running.ca {
            // On stdout as well as in the log: the one thing a user must copy to use TLS.
            println!("TLS: clients trust the development CA at {}", ca.display());
            tracing::info!(ca = %ca.display(), "TLS with the development CA");
        }
        let stop = running.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            stop.cancel();
        });
        running.wait().await?;
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
