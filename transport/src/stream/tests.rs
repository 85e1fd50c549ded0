use super::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn protocol_names_are_checked() {
    assert!(check_protocol("sendme/1").is_ok());
    assert!(check_protocol(&"a".repeat(64)).is_ok());
    assert_eq!(check_protocol("").unwrap_err().why, "empty");
    assert_eq!(check_protocol(&"a".repeat(65)).unwrap_err().len, 65);
    assert!(check_protocol("two words").is_err());
    assert!(check_protocol("é").is_err());
}

#[test]
fn header_decoding_refuses_what_encoding_cannot_make() {
    assert_eq!(StreamHeader::decode(&[]), Err(BadStreamHeader::Short));
    assert_eq!(
        StreamHeader::decode(&[3, b'a']),
        Err(BadStreamHeader::Short)
    );
    assert!(matches!(
        StreamHeader::decode(&[0]),
        Err(BadStreamHeader::Protocol(_))
    ));
    assert!(matches!(
        StreamHeader::decode(&[65]),
        Err(BadStreamHeader::Protocol(_))
    ));
    assert!(matches!(
        StreamHeader::decode(&[2, 0xc3, 0xa9]),
        Err(BadStreamHeader::Protocol(_))
    ));
    let (h, rest) = StreamHeader::decode(b"\x03abcxyz").unwrap();
    assert_eq!((h.protocol, rest), ("abc", &b"xyz"[..]));
}

proptest! {
    #[test]
    fn header_round_trips(name in "[!-~]{1,64}", tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = StreamHeader { protocol: &name }.encode().unwrap();
        bytes.extend_from_slice(&tail);
        let (h, rest) = StreamHeader::decode(&bytes).unwrap();
        prop_assert_eq!(h.protocol, name.as_str());
        prop_assert_eq!(rest, &tail[..]);
    }

    #[test]
    fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok((h, rest)) = StreamHeader::decode(&bytes) {
            prop_assert!(check_protocol(h.protocol).is_ok());
            prop_assert_eq!(1 + h.protocol.len() + rest.len(), bytes.len());
        }
    }
}

fn pair() -> MemPair {
    let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
    mem_pair(a, b, Addr::new("mem", "a"), "t/1".into())
}

/// A pair whose opener waits for the answer (as `open` does), out of the test's way.
fn open_pair() -> MemPair {
    let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
    let mut p = mem_pair(a, b, Addr::new("mem", "a"), "t/1".into());
    let (_, dead) = oneshot::channel();
    let answered = std::mem::replace(&mut p.answered, dead);
    tokio::spawn(async move {
        let _ = answered.await;
    });
    p
}

#[tokio::test]
async fn a_mem_stream_carries_bytes_both_ways_and_ends_cleanly() {
    let MemPair {
        mut send,
        mut recv,
        incoming,
        ..
    } = open_pair();
    let (mut their_send, mut their_recv) = incoming.accept().await.unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            send.write_all(&data).await.unwrap();
            send.finish().await.unwrap();
        })
    };
    let got = their_recv.read_to_end(2_000_000).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got, data);
    their_send.write_all(b"thanks").await.unwrap();
    their_send.shutdown().await.unwrap();
    let mut back = Vec::new();
    AsyncReadExt::read_to_end(&mut recv, &mut back)
        .await
        .unwrap();
    assert_eq!(back, b"thanks");
}

#[tokio::test]
async fn a_slow_mem_reader_holds_the_writer_at_the_window() {
    let MemPair {
        mut send, incoming, ..
    } = open_pair();
    let (_s, _r) = incoming.accept().await.unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0;
    while let Ok(n) = tokio::time::timeout(Duration::from_millis(50), send.write(&chunk)).await {
        written += n.unwrap();
    }
    assert_eq!(written, MEM_WINDOW);
}

#[tokio::test]
async fn dropping_an_unfinished_writer_is_a_reset_not_an_end() {
    let MemPair {
        mut send, incoming, ..
    } = open_pair();
    let (_s, mut r) = incoming.accept().await.unwrap();
    send.write_all(b"partial").await.unwrap();
    drop(send);
    let reset = StreamError::Reset(u64::from(RESET_DROPPED));
    assert_eq!(r.read_to_end(1 << 20).await, Err(reset.clone()));
    // Read again (as a caller retrying a timed-out read would): still the error, never a
    // clean end, through either interface.
    assert_eq!(r.read(&mut [0u8; 8]).await, Err(reset.clone()));
    let e = AsyncReadExt::read(&mut r, &mut [0u8; 8]).await.unwrap_err();
    assert_eq!(StreamError::from_io(&e), Some(&reset));
}

#[tokio::test]
async fn a_stopped_reader_fails_the_writer_and_a_refusal_reaches_the_opener() {
    let MemPair {
        mut send, incoming, ..
    } = open_pair();
    let (_s, mut r) = incoming.accept().await.unwrap();
    r.stop(9);
    assert_eq!(send.write(b"x").await, Err(StreamError::Stopped(9)));

    let MemPair {
        incoming, answered, ..
    } = pair();
    incoming.refuse(Refusal::Busy);
    assert_eq!(answered.await.unwrap(), Err(Refusal::Busy));
    let MemPair {
        incoming, answered, ..
    } = pair();
    drop(incoming);
    assert_eq!(answered.await.unwrap(), Err(Refusal::Refused));
}

#[tokio::test]
async fn a_broken_pipe_fails_both_ends_but_not_a_finished_direction() {
    let MemPair {
        mut send,
        mut recv,
        incoming,
        pipes,
        ..
    } = open_pair();
    let (mut their_send, mut their_recv) = incoming.accept().await.unwrap();
    their_send.write_all(b"done").await.unwrap();
    their_send.finish().await.unwrap();
    for p in &pipes {
        p.upgrade()
            .unwrap()
            .break_with(StreamError::Lost, StreamError::Lost);
    }
    assert_eq!(send.write(b"x").await, Err(StreamError::Lost));
    assert_eq!(their_recv.read(&mut [0; 4]).await, Err(StreamError::Lost));
    // What was finished before the break is still read whole.
    assert_eq!(recv.read_to_end(100).await.unwrap(), b"done");
    let e: io::Error = StreamError::Lost.into();
    assert_eq!(StreamError::from_io(&e), Some(&StreamError::Lost));
}
