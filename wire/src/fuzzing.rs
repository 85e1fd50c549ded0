//! The logic of the wire crate's fuzz targets. Each function must not panic on any input,
//! except through the invariant assertions it makes about successful decodes.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "fuzz targets report by panicking"
)]

use crate::{AddrList, AddrRef, Frame, Reader, WireError, Writer};

/// Frame decoding: a successful parse re-encodes canonically and parses back to the same frame.
pub fn frame(data: &[u8]) {
    let _ = Frame::parse_exact(data);
    let Ok((frame, rest)) = Frame::parse(data) else {
        return;
    };
    let consumed = data.len() - rest.len();
    let mut buf = vec![0u8; frame.encoded_len()];
    let n = frame.encode(&mut buf).expect("a parsed frame encodes");
    assert_eq!(n, buf.len());
    assert!(
        n <= consumed,
        "canonical encoding is never longer than the input"
    );
    if n == consumed {
        assert_eq!(
            &buf[..],
            &data[..consumed],
            "a minimal input round-trips byte for byte"
        );
    }
    assert_eq!(Frame::parse_exact(&buf), Ok(frame));
    // Too small a buffer is an error, never a panic or a partial frame.
    if n > 0 {
        let mut small = vec![0u8; n - 1];
        assert!(matches!(
            frame.encode(&mut small),
            Err(WireError::BufferTooSmall { .. })
        ));
    }
}

/// The reader: a script of reads (the first up to 16 bytes pick the operations) over the rest.
/// Position and remaining always add up, and a failed read moves nothing.
pub fn reader(data: &[u8]) {
    let (script, input) = data.split_at(data.len().min(16));
    let mut r = Reader::new(input);
    for &op in script {
        let before = r.position();
        let failed = match op % 11 {
            0 => r.u8().is_err(),
            1 => r.u16().is_err(),
            2 => r.u32().is_err(),
            3 => r.u64().is_err(),
            4 => r.i64().is_err(),
            5 => r.uvarint().is_err(),
            6 => r.len_prefix(usize::from(op)).is_err(),
            7 => r.len_prefixed(usize::from(op) * 4).is_err(),
            8 => r.bytes(usize::from(op >> 3)).is_err(),
            9 => r.id().is_err(),
            _ => AddrRef::decode(&mut r).is_err(),
        };
        if failed {
            assert_eq!(r.position(), before, "a failed read must not advance");
        }
        assert_eq!(r.position() + r.remaining(), input.len());
    }
    let rest = r.rest();
    assert!(r.is_empty() && r.finish().is_ok() && rest.len() <= input.len());
}

/// Address lists (protocol cap 16): a success re-encodes and decodes to the same addresses.
pub fn addr_list(data: &[u8]) {
    let mut r = Reader::new(data);
    let Ok(list) = AddrList::decode(&mut r, 16) else {
        assert_eq!(r.position(), 0, "a refused list consumes nothing");
        return;
    };
    assert_eq!(list.iter().count(), list.len());
    let mut buf = vec![0u8; AddrList::encoded_len_of(list.iter())];
    let mut w = Writer::new(&mut buf);
    AddrList::encode(&mut w, list.iter()).expect("fits exactly");
    assert_eq!(w.remaining(), 0);
    let again = AddrList::decode(&mut Reader::new(&buf), 16).expect("re-decodes");
    assert!(again.iter().eq(list.iter()));
    assert!(list.encoded_len() >= buf.len());
}
