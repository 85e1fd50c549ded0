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

/// Which of a fuzz target's checks one input reached: bit `i` stands for entry `i` of the
/// target's `*_CHECKS` list. The corpus-replay tests count these, so a check that no input
/// reaches (a test that cannot fail) shows up as a failing test rather than going unnoticed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reached(u64);

impl Reached {
    /// Records that check `i` ran.
    pub fn hit(&mut self, i: usize) {
        self.0 |= 1 << i;
    }

    /// True if check `i` ran.
    pub fn has(self, i: usize) -> bool {
        (self.0 >> i) & 1 == 1
    }
}

/// The checks of [`reader`], in [`Reached`] bit order.
pub const READER_CHECKS: &[&str] = &[
    "fixed-width read: value and width",
    "uvarint agrees with the reference decoder",
    "len_prefix(max) accepted: <= max, advanced by the uvarint width",
    "len_prefix(max) refused: over max or not a uvarint",
    "len_prefixed: length, width and bytes",
    "bytes/id: advanced by the width asked",
    "address: advanced by both prefixes and both strings",
    "failed read left the position alone",
];

/// An independent LEB128 decoder to hold the reader to: the value and width of the uvarint at
/// the start of `b`, or `None` if there is none (cut short, or past 64 bits within ten bytes).
fn reference_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u128 = 0;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u128::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return u64::try_from(v).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// The reader: a script of reads (the first up to 16 bytes pick the operations) over the rest.
/// Every read is held to an independent model: a success returns the value the bytes encode
/// and advances by exactly its width, `len_prefix(max)` never exceeds `max`, a failure is a
/// read the model also refuses and moves nothing, and position and remaining add up.
pub fn reader(data: &[u8]) -> Reached {
    const FIXED: usize = 0;
    const UVARINT: usize = 1;
    const LEN_OK: usize = 2;
    const LEN_REFUSED: usize = 3;
    const LEN_PREFIXED: usize = 4;
    const BYTES: usize = 5;
    const ADDR: usize = 6;
    const FAILED: usize = 7;
    let mut reached = Reached::default();
    let (script, input) = data.split_at(data.len().min(16));
    let mut r = Reader::new(input);
    for &op in script {
        let before = r.position();
        let at = &input[before..];
        let uv = reference_uvarint(at);
        // The width a fixed-size read must advance by, with the bytes it must return.
        let fixed = |n: usize| at.get(..n);
        let failed = match op % 11 {
            0 => check_fixed(r.u8().map(|v| v.to_be_bytes().to_vec()), fixed(1)),
            1 => check_fixed(r.u16().map(|v| v.to_be_bytes().to_vec()), fixed(2)),
            2 => check_fixed(r.u32().map(|v| v.to_be_bytes().to_vec()), fixed(4)),
            3 => check_fixed(r.u64().map(|v| v.to_be_bytes().to_vec()), fixed(8)),
            4 => check_fixed(r.i64().map(|v| v.to_be_bytes().to_vec()), fixed(8)),
            5 => {
                let got = r.uvarint();
                assert_eq!(got.as_ref().ok().copied(), uv.map(|(v, _)| v), "{got:?}");
                assert_eq!(r.position(), before + uv.map_or(0, |(_, w)| w));
                reached.hit(UVARINT);
                got.is_err()
            }
            6 => {
                let max = usize::from(op);
                match r.len_prefix(max) {
                    Ok(n) => {
                        assert!(n <= max, "len_prefix({max}) returned {n}");
                        let (v, w) = uv.expect("the reference reads a uvarint too");
                        assert_eq!(n as u64, v);
                        assert_eq!(r.position(), before + w, "advances by the uvarint width");
                        reached.hit(LEN_OK);
                        false
                    }
                    Err(e) => {
                        assert!(uv.is_none_or(|(v, _)| v > max as u64), "{e:?} for {uv:?}");
                        reached.hit(LEN_REFUSED);
                        true
                    }
                }
            }
            7 => {
                let max = usize::from(op) * 4;
                match r.len_prefixed(max) {
                    Ok(s) => {
                        let (v, w) = uv.expect("the reference reads a uvarint too");
                        assert!(s.len() <= max && s.len() as u64 == v);
                        assert_eq!(s, &at[w..w + s.len()]);
                        assert_eq!(r.position(), before + w + s.len());
                        reached.hit(LEN_PREFIXED);
                        false
                    }
                    Err(_) => {
                        assert!(
                            uv.is_none_or(|(v, w)| v > max as u64 || v > (at.len() - w) as u64)
                        );
                        true
                    }
                }
            }
            8 => {
                let n = usize::from(op >> 3);
                let got = r.bytes(n);
                assert_eq!(got.is_ok(), n <= at.len());
                if let Ok(s) = got {
                    assert_eq!(s, &at[..n]);
                    assert_eq!(r.position(), before + n);
                    reached.hit(BYTES);
                }
                got.is_err()
            }
            9 => {
                let got = r.id();
                assert_eq!(
                    got.map(|id| id.as_bytes().to_vec()).ok().as_deref(),
                    fixed(32)
                );
                if got.is_ok() {
                    assert_eq!(r.position(), before + 32);
                    reached.hit(BYTES);
                }
                got.is_err()
            }
            _ => match AddrRef::decode(&mut r) {
                Ok(a) => {
                    let (n1, w1) = uv.expect("a net length");
                    let rest = &at[w1 + a.net.len()..];
                    let (n2, w2) = reference_uvarint(rest).expect("an endpoint length");
                    assert_eq!((a.net.len() as u64, a.endpoint.len() as u64), (n1, n2));
                    assert_eq!(a.net.as_bytes(), &at[w1..w1 + a.net.len()]);
                    assert_eq!(a.endpoint.as_bytes(), &rest[w2..w2 + a.endpoint.len()]);
                    assert_eq!(
                        r.position(),
                        before + w1 + w2 + a.net.len() + a.endpoint.len()
                    );
                    reached.hit(ADDR);
                    false
                }
                Err(_) => true,
            },
        };
        if op % 11 <= 4 && !failed {
            let width = [1, 2, 4, 8, 8][usize::from(op % 11)];
            assert_eq!(
                r.position(),
                before + width,
                "a fixed-width read advances by its width"
            );
            reached.hit(FIXED);
        }
        if failed {
            assert_eq!(r.position(), before, "a failed read must not advance");
            reached.hit(FAILED);
        }
        assert_eq!(r.position() + r.remaining(), input.len());
    }
    let rest = r.rest();
    assert!(r.is_empty() && r.finish().is_ok() && rest.len() <= input.len());
    reached
}

/// A fixed-width read's outcome against the bytes the model says it covers: it succeeds
/// exactly when they are there, and returns them. True when it failed.
fn check_fixed(got: Result<Vec<u8>, WireError>, want: Option<&[u8]>) -> bool {
    assert_eq!(got.as_deref().ok(), want, "{got:?}");
    got.is_err()
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
