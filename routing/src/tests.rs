#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

use std::time::Duration;

use nodenet_identity::{Identity, PUBLIC_KEY_LEN};
use nodenet_kad::NodeId;
use nodenet_testkit::{Value, hex32, unhex, vectors};
use nodenet_wire::{Addr, Frame, FrameType, Reader, WireError, Writer};

use crate::control::{self, Caps, Contact};
use crate::msg::{self, MsgError, MsgFields, MsgRef};
use crate::*;

fn id_of(v: &Value) -> NodeId {
    NodeId::from_bytes(hex32(v))
}

fn contact_from(v: &Value) -> Contact {
    let key = |k: &Value| {
        let b = hex32(k);
        (b != [0; 32]).then_some(b)
    };
    Contact {
        id: id_of(&v["id"]),
        ed_pub: key(&v["ed_pub"]),
        x_pub: key(&v["x_pub"]),
        caps: Caps(v["caps"].as_u64().unwrap() as u32),
        addrs: v["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| Addr::new(a["net"].as_str().unwrap(), a["endpoint"].as_str().unwrap()))
            .collect(),
    }
}

fn t(secs: u64) -> Time {
    Time(secs * 1_000_000_000)
}

fn ident(n: u64) -> Identity {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    Identity::from_seed(&seed)
}

fn keyed(i: &Identity, addr: &str) -> Contact {
    Contact {
        id: i.node_id(),
        ed_pub: Some(i.ed_public()),
        x_pub: Some(i.x_public()),
        caps: Caps::default(),
        addrs: vec![Addr::new("quic", addr)],
    }
}

/// Id `n` of bucket 0 of `NodeId::ZERO`: every id with a top bit set falls in it.
fn bucket0_id(n: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = 0x80;
    b[31] = n;
    NodeId::from_bytes(b)
}

mod edges;
mod envelope;
mod knowledge;
mod payloads;
