//! Testing an application on an in-memory cluster: 20 nodes, on tokio's paused clock, no
//! sockets. The "application" here answers each greeting with its NodeId; the test checks
//! every node answers, then that a partitioned node does not.
//!
//! In a crate of yours this is a `#[tokio::test(start_paused = true)]` test (tokio's
//! `test-util` feature); here it runs as an example.
//!
//! ```text
//! cargo run -p nodenet --example cluster_test
//! ```

use std::time::Duration;

use nodenet::testing::Cluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?
        .block_on(test())
}

async fn test() -> Result<(), Box<dyn std::error::Error>> {
    let (simulated, wall) = (tokio::time::Instant::now(), std::time::Instant::now());
    let mut cluster = Cluster::builder(20).build();
    cluster.settled(Duration::from_secs(120)).await?;

    // The application: every node answers a greeting with its own NodeId.
    for i in 1..cluster.len() {
        cluster.node(0).send(cluster.id(i), b"who are you?")?;
    }
    for i in 1..cluster.len() {
        let d = cluster.inbox(i).recv().await.ok_or("closed")?;
        let me = cluster.id(i).to_string();
        cluster.node(i).send(d.originator, me.as_bytes())?;
    }
    let mut answered = 0;
    while answered < cluster.len() - 1 {
        let d = tokio::time::timeout(Duration::from_secs(10), cluster.inbox(0).recv()).await?;
        let d = d.ok_or("closed")?;
        assert_eq!(d.payload, d.originator.to_string().as_bytes());
        answered += 1;
    }
    println!("all {answered} nodes answered");

    // Node 7 is cut off from everyone: its greeting goes unanswered.
    cluster.isolate(7);
    cluster.node(0).send(cluster.id(7), b"who are you?")?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        cluster.inbox(7).try_recv().is_none(),
        "a partitioned node got mail"
    );
    println!("the partitioned node heard nothing");
    cluster.shutdown().await;
    println!(
        "{:.0} s of simulated time in {:.2} s of wall time",
        simulated.elapsed().as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}
