//! The sealed box: sender-authenticated encryption to a node's static X25519 key.
//!
//! ```text
//! box = eph_pub(32) | sender_ed_pub(32) | ts(8, i64 BE Unix ns) | uvarint(len ct) | ct | sig(64)
//! shared      = X25519(eph_priv, recipient_x_pub)
//! key | nonce = HKDF-SHA256(salt = empty, ikm = shared, info = "nodenet/v1/sealed-box", 44 bytes)
//! ct          = ChaCha20-Poly1305(key, nonce, plaintext, aad)      (16-byte tag appended)
//! sig         = Ed25519(sender, "nodenet/v1/sealed-box-sig" | eph_pub | recipient_x_pub | ts | ct)
//! ```
//!
//! A fresh ephemeral key per box gives forward secrecy against a later leak of the sender's
//! keys; the signature binds the box to its sender, its recipient and its time. Opening checks
//! the signature first (cheap rejection of forgeries and of boxes for another recipient), then
//! freshness, then the replay cache, and only then does the key agreement and decrypts.

use std::collections::HashMap;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use nodenet_identity::{Identity, derive_id, verify};
use nodenet_kad::NodeId;
use nodenet_wire::{Reader, WireError, Writer, uvarint_len};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// HKDF info of the box's key and nonce.
pub const SEAL_DOMAIN: &[u8] = b"nodenet/v1/sealed-box";
/// Signature domain of the box.
pub const SEAL_SIG_DOMAIN: &[u8] = b"nodenet/v1/sealed-box-sig";
/// How far a box's timestamp may be from the opener's clock, either way: 30 s.
pub const MAX_AGE_NS: i64 = 30_000_000_000;
/// Ephemeral keys the replay cache remembers at most (two generations of half this).
pub const REPLAY_CAPACITY: usize = 65_536;

const KEY_LEN: usize = 32;
const SIG_LEN: usize = 64;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = KEY_LEN + KEY_LEN + 8;

/// Why a box could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The recipient key is of small order: no shared secret would come of it.
    #[error("recipient X25519 key is of small order")]
    WeakRecipientKey,
    /// The plaintext is too long to encrypt.
    #[error("plaintext too long to seal")]
    TooLong,
}

/// Why a box did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The bytes are not a box (canonically: nothing may follow the signature).
    #[error("malformed sealed box: {0}")]
    Malformed(#[from] WireError),
    /// The sender's signature does not verify over this box to us: forged, altered, or
    /// sealed to another recipient.
    #[error("sealed box signature does not verify")]
    BadSignature,
    /// The timestamp is outside the freshness window.
    #[error("sealed box timestamp outside the {MAX_AGE_NS} ns window")]
    Expired,
    /// This box (its ephemeral key) was opened before.
    #[error("sealed box replayed")]
    Replay,
    /// The ephemeral key is of small order.
    #[error("sealed box ephemeral key is of small order")]
    WeakKey,
    /// Decryption failed: the associated data differs, or the ciphertext is corrupt.
    #[error("sealed box does not decrypt")]
    Decrypt,
}

/// An opened box.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's Ed25519 key (its signature verified).
    pub sender_ed: [u8; KEY_LEN],
    /// The sender's NodeId.
    pub sender: NodeId,
    /// When it was sealed (Unix ns, the sender's clock).
    pub sealed_at: i64,
    /// The content.
    pub plaintext: Vec<u8>,
}

impl std::fmt::Debug for Opened {
    /// The content stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("sender", &self.sender)
            .field("sealed_at", &self.sealed_at)
            .field("len", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

/// Bytes a box of `plaintext_len` bytes takes.
pub fn sealed_len(plaintext_len: usize) -> usize {
    let ct = plaintext_len + TAG_LEN;
    HEADER_LEN + uvarint_len(ct as u64) + ct + SIG_LEN
}

/// Seals `plaintext` from `sender` to the static X25519 key `recipient_x`, at Unix time
/// `now_ns`, with a fresh ephemeral key from `rng`. `aad` is authenticated, not sent.
pub fn seal<R: rand_core::CryptoRng + ?Sized>(
    sender: &Identity,
    recipient_x: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
    now_ns: i64,
    rng: &mut R,
) -> Result<Vec<u8>, SealError> {
    let mut eph = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill_bytes(eph.as_mut());
    seal_with_ephemeral(sender, recipient_x, plaintext, aad, now_ns, &eph)
}

/// [`seal`] with the ephemeral secret given: for known-answer tests only. Reusing an
/// ephemeral secret reuses the key and nonce; never do it with real content.
pub fn seal_with_ephemeral(
    sender: &Identity,
    recipient_x: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
    now_ns: i64,
    eph_secret: &[u8; KEY_LEN],
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() > u32::MAX as usize {
        return Err(SealError::TooLong);
    }
    let secret = StaticSecret::from(*eph_secret);
    let eph_pub = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*recipient_x));
    if !shared.was_contributory() {
        return Err(SealError::WeakRecipientKey);
    }
    let (cipher, nonce) = cipher_for(shared.as_bytes());
    let ct_len = plaintext.len() + TAG_LEN;
    let mut out = vec![0u8; sealed_len(plaintext.len())];
    let ct_at = HEADER_LEN + uvarint_len(ct_len as u64);
    {
        let mut w = Writer::new(&mut out);
        put(&mut w, &eph_pub);
        put(&mut w, &sender.ed_public());
        put(&mut w, &now_ns.to_be_bytes());
        let _ = w.put_uvarint(ct_len as u64);
    }
    let body = &mut out[ct_at..ct_at + ct_len];
    body[..plaintext.len()].copy_from_slice(plaintext);
    let (pt, tag_out) = body.split_at_mut(plaintext.len());
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, pt.into())
        .map_err(|_| SealError::TooLong)?;
    tag_out.copy_from_slice(&tag);
    let sig = sender.sign(&signed_message(
        &eph_pub,
        recipient_x,
        now_ns,
        &out[ct_at..ct_at + ct_len],
    ));
    out[ct_at + ct_len..].copy_from_slice(&sig);
    Ok(out)
}

fn put(w: &mut Writer<'_>, b: &[u8]) {
    // The buffer is sized by `sealed_len`, so the writes fit.
    let _ = w.put_bytes(b);
}

fn cipher_for(shared: &[u8; 32]) -> (ChaCha20Poly1305, Nonce) {
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below HKDF-SHA256's output limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, shared).expand(SEAL_DOMAIN, okm.as_mut());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (ChaCha20Poly1305::new(&(*key).into()), Nonce::from(nonce))
}

fn signed_message(eph_pub: &[u8; 32], recipient_x: &[u8; 32], ts: i64, ct: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SEAL_SIG_DOMAIN.len() + 72 + ct.len());
    m.extend_from_slice(SEAL_SIG_DOMAIN);
    m.extend_from_slice(eph_pub);
    m.extend_from_slice(recipient_x);
    m.extend_from_slice(&ts.to_be_bytes());
    m.extend_from_slice(ct);
    m
}

/// A decoded box, before any check.
struct Parts<'a> {
    eph_pub: [u8; KEY_LEN],
    sender_ed: [u8; KEY_LEN],
    ts: i64,
    ct: &'a [u8],
    sig: [u8; SIG_LEN],
}

fn decode(data: &[u8]) -> Result<Parts<'_>, WireError> {
    let mut r = Reader::new(data);
    let eph_pub = *r.array::<KEY_LEN>()?;
    let sender_ed = *r.array::<KEY_LEN>()?;
    let ts = r.i64()?;
    let ct = r.len_prefixed(data.len())?;
    let sig = *r.array::<SIG_LEN>()?;
    r.finish()?;
    if ct.len() < TAG_LEN {
        return Err(WireError::Truncated);
    }
    Ok(Parts {
        eph_pub,
        sender_ed,
        ts,
        ct,
        sig,
    })
}

/// Opens `data` sealed to `recipient`, at Unix time `now_ns`, with the same `aad` it was
/// sealed with. A box opens once: `replay` remembers it until it expires.
pub fn open(
    recipient: &Identity,
    data: &[u8],
    aad: &[u8],
    now_ns: i64,
    replay: &mut ReplayCache,
) -> Result<Opened, OpenError> {
    let p = decode(data)?;
    let msg = signed_message(&p.eph_pub, &recipient.x_public(), p.ts, p.ct);
    verify(&p.sender_ed, &msg, &p.sig).map_err(|_| OpenError::BadSignature)?;
    let age = now_ns.saturating_sub(p.ts);
    if !(-MAX_AGE_NS..=MAX_AGE_NS).contains(&age) {
        return Err(OpenError::Expired);
    }
    let expires = p.ts.saturating_add(MAX_AGE_NS);
    replay.check(&p.eph_pub, expires, now_ns)?;
    let shared = recipient
        .key_agreement(&p.eph_pub)
        .ok_or(OpenError::WeakKey)?;
    let (cipher, nonce) = cipher_for(&shared);
    let (ct, tag) = p.ct.split_at(p.ct.len() - TAG_LEN);
    let mut plaintext = ct.to_vec();
    let tag = Tag::try_from(tag).map_err(|_| OpenError::Decrypt)?;
    cipher
        .decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
        .map_err(|_| OpenError::Decrypt)?;
    replay.insert(p.eph_pub, expires, now_ns);
    Ok(Opened {
        sender_ed: p.sender_ed,
        sender: derive_id(&p.sender_ed),
        sealed_at: p.ts,
        plaintext,
    })
}

/// Remembers the ephemeral keys of opened boxes until their freshness window closes, in two
/// generations of [`REPLAY_CAPACITY`]` / 2` keys each.
///
/// When a flood of boxes forces a generation out before its entries expired, the cache raises
/// a floor and refuses, as possible replays, boxes whose window ends at or before the latest
/// expiry it forgot: memory stays bounded and no replay is ever accepted (the reference's
/// cache forgets such entries and would accept their replay).
#[derive(Debug, Default)]
pub struct ReplayCache {
    current: HashMap<[u8; KEY_LEN], i64>,
    previous: HashMap<[u8; KEY_LEN], i64>,
    floor: i64,
}

impl ReplayCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            floor: i64::MIN,
            ..Self::default()
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, eph: &[u8; KEY_LEN], expires: i64, now: i64) -> Result<(), OpenError> {
        if expires <= self.floor {
            return Err(OpenError::Replay);
        }
        // A box is fresh up to and including its expiry instant, so its entry lives as long.
        let seen = |g: &HashMap<[u8; KEY_LEN], i64>| g.get(eph).is_some_and(|&e| e >= now);
        if seen(&self.current) || seen(&self.previous) {
            return Err(OpenError::Replay);
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, eph: [u8; KEY_LEN], expires: i64, now: i64) {
        if self.current.len() >= REPLAY_CAPACITY / 2 {
            self.current.retain(|_, e| *e >= now);
        }
        if self.current.len() >= REPLAY_CAPACITY / 2 {
            let forgotten = self.previous.values().copied().filter(|&e| e >= now).max();
            if let Some(e) = forgotten {
                self.floor = self.floor.max(e);
            }
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(eph, expires);
    }
}
