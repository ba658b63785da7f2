//! CPU per `BufferedProducerClient::enqueue_event`, without the network: the client is open on a
//! local broker, but its buffers are large enough and its wait long enough that nothing is sent
//! while the enqueues are timed (what they buffer is abandoned at the end). One task, and 8
//! tasks on the 2-thread runtime, 100-byte events spread over 4 partitions by id.
//!
//! `cargo bench -p ehub --bench enqueue`

use criterion::{criterion_group, criterion_main, Criterion};
use ehub::buffered::{BufferedProducerClient, BufferedProducerOptions, EnqueueEventOptions};
use ehub::EventData;
use ehub_broker::{serve_listeners, Broker, CoreConfig, Listener, Protocol};
use std::time::{Duration, Instant};

/// Enqueues per client: a fresh client (empty buffers) for every chunk, so the buffers' growth
/// is that of a client sending batches of up to 1M events, not of one unbounded buffer.
const CHUNK: u64 = 1 << 20;

fn enqueue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cs = rt.block_on(async {
        let broker = Broker::open(CoreConfig { data_dir: dir.path().to_owned(), ..Default::default() }).unwrap();
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(async move {
            serve_listeners(broker, vec![Listener { socket, protocol: Protocol::Amqp }], stop).await.unwrap()
        });
        format!("Endpoint=sb://{addr};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
    });
    let body = bytes::Bytes::from(vec![b'x'; 100]);
    let routes: Vec<Option<EnqueueEventOptions>> =
        (0..4).map(|p| Some(EnqueueEventOptions { partition_id: Some(p.to_string()), ..Default::default() })).collect();
    let open = || async {
        let options = BufferedProducerOptions {
            max_buffer_length: CHUNK as usize,
            max_wait_time: Duration::from_secs(3600),
            ..Default::default()
        };
        BufferedProducerClient::builder()
            .with_buffered_options(options)
            .with_on_send_succeeded(|_, _| {})
            .with_on_send_failed(|_, _, _| {})
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap()
    };
    let mut g = c.benchmark_group("buffered");
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("enqueue_event, 1 task", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut took = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    left -= n;
                    let p = open().await;
                    let t = Instant::now();
                    for i in 0..n {
                        p.enqueue_event(EventData::from(body.clone()), routes[i as usize % 4].clone()).await.unwrap();
                    }
                    took += t.elapsed();
                    p.close(false, None).await.unwrap();
                }
                took
            })
        })
    });
    g.bench_function("enqueue_event, 8 tasks (CPU time per event on 2 threads)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut took = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let iters = left.min(CHUNK);
                    left -= iters;
                    let p = open().await;
                    let t = Instant::now();
                    let tasks: Vec<_> = (0..8u64)
                        .map(|task| {
                            let (p, body, routes) = (p.clone(), body.clone(), routes.clone());
                            tokio::spawn(async move {
                                for i in (task..iters).step_by(8) {
                                    p.enqueue_event(EventData::from(body.clone()), routes[i as usize % 4].clone())
                                        .await
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    // Two threads worked: CPU time per event is twice the wall time per event.
                    took += t.elapsed() * 2;
                    p.close(false, None).await.unwrap();
                }
                took
            })
        })
    });
    g.finish();
}

criterion_group!(benches, enqueue);
criterion_main!(benches);
