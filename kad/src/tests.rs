#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

use std::cmp::Ordering;

use proptest::prelude::*;

use super::*;

fn id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

/// 257-bit sum of two distances as five little-endian u64 limbs (the top one is the carry).
fn add(a: &Distance, b: &Distance) -> [u64; 5] {
    let word = |d: &Distance, i: usize| {
        let off = (3 - i) * 8;
        u64::from_be_bytes(d.as_bytes()[off..off + 8].try_into().unwrap())
    };
    let mut out = [0u64; 5];
    let mut carry = false;
    for (i, limb) in out.iter_mut().take(4).enumerate() {
        let (s1, c1) = word(a, i).overflowing_add(word(b, i));
        let (s2, c2) = s1.overflowing_add(u64::from(carry));
        *limb = s2;
        carry = c1 || c2;
    }
    out[4] = u64::from(carry);
    out
}

fn widen(d: &Distance) -> [u64; 5] {
    add(d, &Distance::ZERO)
}

fn le_limbs(a: &[u64; 5], b: &[u64; 5]) -> bool {
    a.iter().rev().cmp(b.iter().rev()) != Ordering::Greater
}

proptest! {
    #[test]
    fn distance_to_self_is_zero(a in id()) {
        prop_assert_eq!(a.distance(&a), Distance::ZERO);
        prop_assert_eq!(a.common_prefix_len(&a), 256);
        prop_assert_eq!(a.bucket_index(&a), None);
    }

    #[test]
    fn distance_is_symmetric(a in id(), b in id()) {
        prop_assert_eq!(a.distance(&b), b.distance(&a));
        prop_assert_eq!(a.common_prefix_len(&b), b.common_prefix_len(&a));
    }

    #[test]
    fn distance_is_zero_only_for_equal_ids(a in id(), b in id()) {
        prop_assert_eq!(a.distance(&b) == Distance::ZERO, a == b);
    }

    #[test]
    fn triangle_inequality(a in id(), b in id(), c in id()) {
        let ac = widen(&a.distance(&c));
        let via_b = add(&a.distance(&b), &b.distance(&c));
        prop_assert!(le_limbs(&ac, &via_b));
    }

    #[test]
    fn unidirectional(a in id(), b in id(), c in id()) {
        // For a fixed point and distance there is exactly one other point.
        prop_assert_eq!(a.distance(&b) == a.distance(&c), b == c);
    }

    #[test]
    fn cmp_distance_agrees_with_distance_order(t in id(), a in id(), b in id()) {
        prop_assert_eq!(t.cmp_distance(&a, &b), t.distance(&a).cmp(&t.distance(&b)));
    }

    #[test]
    fn prefix_len_is_leading_zeros_of_distance(a in id(), b in id()) {
        prop_assert_eq!(a.common_prefix_len(&b), a.distance(&b).leading_zeros());
        // Bitwise definition: the first differing bit is at the prefix length.
        let cpl = a.common_prefix_len(&b);
        for bit in 0..cpl.min(256) {
            let (byte, shift) = ((bit / 8) as usize, 7 - bit % 8);
            prop_assert_eq!(a.as_bytes()[byte] >> shift & 1, b.as_bytes()[byte] >> shift & 1);
        }
        if cpl < 256 {
            let (byte, shift) = ((cpl / 8) as usize, 7 - cpl % 8);
            prop_assert_ne!(a.as_bytes()[byte] >> shift & 1, b.as_bytes()[byte] >> shift & 1);
        }
    }

    #[test]
    fn hex_round_trip(a in id()) {
        let s = a.to_string();
        prop_assert_eq!(s.len(), 64);
        prop_assert_eq!(s.parse::<NodeId>(), Ok(a));
        prop_assert_eq!(s.to_ascii_uppercase().parse::<NodeId>(), Ok(a));
    }

    #[test]
    fn parse_never_panics(s in ".{0,80}") {
        fuzzing::parse_id(s.as_bytes());
    }
}

#[test]
fn parse_errors_say_what_is_wrong() {
    assert_eq!(
        "abc".parse::<NodeId>(),
        Err(ParseIdError::InvalidLength { len: 3 })
    );
    let mut s = "0".repeat(64);
    s.replace_range(10..11, "g");
    assert_eq!(
        s.parse::<NodeId>(),
        Err(ParseIdError::InvalidDigit { index: 10 })
    );
    // A multi-byte character must not be sliced through.
    let s = format!("é{}", "0".repeat(62));
    assert_eq!(
        s.parse::<NodeId>(),
        Err(ParseIdError::InvalidDigit { index: 0 })
    );
    assert!(format!("0x{}", "0".repeat(62)).parse::<NodeId>().is_err());
}

#[test]
fn leading_zeros_cross_word_boundaries() {
    let mut b = [0u8; 32];
    b[7] = 1;
    assert_eq!(NodeId::from_bytes(b).leading_zeros(), 63);
    b[7] = 0;
    b[8] = 0x80;
    assert_eq!(NodeId::from_bytes(b).leading_zeros(), 64);
    assert_eq!(NodeId::ZERO.leading_zeros(), 256);
}

#[test]
fn short_form_is_eight_digits() {
    let id: NodeId = format!("deadbeef{}", "0".repeat(56)).parse().unwrap();
    assert_eq!(id.short().to_string(), "deadbeef");
    assert_eq!(
        format!("{id:?}"),
        format!("NodeId(deadbeef{})", "0".repeat(56))
    );
}
