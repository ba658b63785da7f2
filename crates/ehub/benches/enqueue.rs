//! CPU per `BufferedProducerClient::enqueue_event`, the network left out: the client runs as in
//! use, at its default options, sending to an in-process broker, both on a runtime of their
//! own (one thread); the enqueuing tasks run on threads of their own, and what is reported is
//! those threads' CPU time (`CLOCK_THREAD_CPUTIME_ID`) per event. So the figure holds what an
//! enqueue costs the caller in steady state (buffers of `max_buffer_length` that the sender
//! keeps taking, waits for room included), and nothing of encoding, sending or the broker.
//! 100-byte events spread over 4 partitions by id; one task on one thread, and 8 tasks on 2
//! threads.
//!
//! `cargo bench -p ehub --bench enqueue`

use criterion::{criterion_group, criterion_main, Criterion};
use ehub::buffered::{BufferedProducerClient, EnqueueEventOptions};
use ehub::EventData;
use ehub_broker::{serve_listeners, Broker, CoreConfig, Listener, Protocol};
use std::time::Duration;

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Enqueues `per_thread[i]` events split over `tasks` tasks on thread `i`, each thread running a
/// runtime of its own; returns the threads' CPU time, summed.
fn enqueue_on_threads(p: &BufferedProducerClient, per_thread: &[u64], tasks: u64) -> Duration {
    let body = bytes::Bytes::from(vec![b'x'; 100]);
    let threads: Vec<_> = per_thread
        .iter()
        .map(|&events| {
            let (p, body) = (p.clone(), body.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let routes: Vec<Option<EnqueueEventOptions>> = (0..4)
                    .map(|p| Some(EnqueueEventOptions { partition_id: Some(p.to_string()), ..Default::default() }))
                    .collect();
                let started = thread_cpu();
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for task in 0..tasks {
                        let (p, body, routes) = (p.clone(), body.clone(), routes.clone());
                        set.spawn(async move {
                            for i in (task..events).step_by(tasks as usize) {
                                p.enqueue_event(EventData::from(body.clone()), routes[i as usize % 4].clone())
                                    .await
                                    .unwrap();
                            }
                        });
                    }
                    while let Some(r) = set.join_next().await {
                        r.unwrap();
                    }
                });
                thread_cpu() - started
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn enqueue(c: &mut Criterion) {
    // The broker and the client's own tasks (senders, connection): one thread.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = rt.block_on(async {
        let config = CoreConfig {
            data_dir: dir.path().to_owned(),
            fsync: ehub_broker::parse_fsync("never", 0).unwrap(),
            ..Default::default()
        };
        let broker = Broker::open(config).unwrap();
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(async move {
            serve_listeners(broker, vec![Listener { socket, protocol: Protocol::Amqp }], stop).await.unwrap()
        });
        let cs = format!("Endpoint=sb://{addr};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;");
        BufferedProducerClient::builder()
            .with_on_send_succeeded(|_, _| {})
            .with_on_send_failed(|_, _, e| panic!("send failed: {e}"))
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap()
    });
    let mut g = c.benchmark_group("buffered");
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("enqueue_event CPU, 1 task on 1 thread", |b| {
        b.iter_custom(|iters| enqueue_on_threads(&p, &[iters], 1))
    });
    g.bench_function("enqueue_event CPU, 8 tasks on 2 threads", |b| {
        b.iter_custom(|iters| enqueue_on_threads(&p, &[iters / 2, iters - iters / 2], 4))
    });
    g.finish();
    rt.block_on(p.close(true, None)).unwrap();
}

criterion_group!(benches, enqueue);
criterion_main!(benches);
