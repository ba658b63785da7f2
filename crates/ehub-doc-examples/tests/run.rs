//! The README's client example runs against a real broker.

#[tokio::test]
async fn the_readme_example_runs_against_a_test_broker() {
    let broker = ehub_broker::TestBroker::start().await.unwrap();
    let (cs, storage_cs) = (broker.connection_string(), broker.storage_connection_string());
    let run = ehub_doc_examples::readme(&cs, &storage_cs);
    tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("in time").expect("runs");
    broker.stop().await.unwrap();
}
