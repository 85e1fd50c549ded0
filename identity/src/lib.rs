//! nodenet identities: one 32-byte master seed, and everything derived from it.
//!
//! ```text
//!               seed (32 bytes, the only secret)
//!                 │ HKDF-SHA256 extract, empty salt
//!                PRK
//!      ┌──────────┴───────────┐  HKDF expand, info label
//! Ed25519 signing key    X25519 static secret
//!      │ public key           │ public key
//!    ed_pub                 x_pub
//!      │ BLAKE2b-256
//!    NodeId
//! ```
//!
//! The labels and hash choices are protocol consensus (tier 1): a node whose derivation
//! differs has different keys and is not the node its peers think it is. Known-answer vectors
//! from the reference implementation pin every step.
//!
//! The Ed25519 key signs (TLS binding, routed envelopes, rendezvous, sealed boxes); the X25519
//! key is used only for sealed-box key agreement. Only the seed is persisted: see
//! [`write_seed_file`] and [`read_seed_file`]. Secrets are zeroized on drop and never appear in
//! `Debug` output.
//!
//! This crate does no networking and reads no clock.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;

use blake2::{Blake2b256, Digest};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

pub use nodenet_kad::NodeId;
/// The random-source traits [`Identity::generate`] takes.
pub use rand_core;

mod seed_file;

pub use seed_file::{SeedFileError, read_seed_file, write_seed_file};

/// Length of the master seed.
pub const SEED_LEN: usize = 32;
/// Length of an Ed25519 or X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// HKDF info label for the Ed25519 signing seed (tier 1).
pub const LABEL_ED25519: &[u8] = b"nodenet/v1/identity-ed25519";
/// HKDF info label for the X25519 static secret (tier 1).
pub const LABEL_X25519: &[u8] = b"nodenet/v1/kex-x25519";

/// A node's keys, all derived from one seed.
pub struct Identity {
    seed: Zeroizing<[u8; SEED_LEN]>,
    signing: SigningKey,
    kex: x25519_dalek::StaticSecret,
    kex_public: [u8; PUBLIC_KEY_LEN],
    id: NodeId,
}

impl Identity {
    /// Derives the identity of `seed`.
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        let prk = Hkdf::<Sha256>::new(None, seed);
        let signing = SigningKey::from_bytes(&expand(&prk, LABEL_ED25519));
        let kex = x25519_dalek::StaticSecret::from(*expand(&prk, LABEL_X25519));
        let kex_public = x25519_dalek::PublicKey::from(&kex).to_bytes();
        let id = derive_id(signing.verifying_key().as_bytes());
        Self {
            seed: Zeroizing::new(*seed),
            signing,
            kex,
            kex_public,
            id,
        }
    }

    /// A fresh identity from a cryptographic random source (no proof-of-work: see
    /// `nodenet_pow::solve` for an identity a network with a difficulty will admit).
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// The master seed: the only secret, and the only thing to persist.
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// The NodeId: BLAKE2b-256 of the Ed25519 public key.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn ed_public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.signing.verifying_key().to_bytes()
    }

    /// The raw X25519 static public key.
    pub fn x_public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.kex_public
    }

    /// Signs `msg` with the Ed25519 key (pure Ed25519, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(msg).to_bytes()
    }

    /// X25519 with the static secret: the raw shared point with `their_public`.
    ///
    /// Returns `None` when the result is all zeros (a low-order peer key contributes nothing),
    /// which callers must treat as a failed key agreement.
    pub fn key_agreement(
        &self,
        their_public: &[u8; PUBLIC_KEY_LEN],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self
            .kex
            .diffie_hellman(&x25519_dalek::PublicKey::from(*their_public));
        shared
            .was_contributory()
            .then(|| Zeroizing::new(shared.to_bytes()))
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self::from_seed(&self.seed)
    }
}

impl fmt::Debug for Identity {
    /// Shows the NodeId only: the seed and private keys never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The NodeId of a raw Ed25519 public key: unkeyed BLAKE2b with a 32-byte output.
pub fn derive_id(ed_public: &[u8; PUBLIC_KEY_LEN]) -> NodeId {
    NodeId::from_bytes(Blake2b256::digest(ed_public).into())
}

/// The NodeId `seed` would have, without deriving the X25519 key: the fast path for minting.
pub fn node_id_from_seed(seed: &[u8; SEED_LEN]) -> NodeId {
    let prk = Hkdf::<Sha256>::new(None, seed);
    let signing = SigningKey::from_bytes(&expand(&prk, LABEL_ED25519));
    derive_id(signing.verifying_key().as_bytes())
}

/// Why a signature did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The 32 bytes are not a valid Ed25519 public key (not a curve point, or of small order).
    #[error("not a valid Ed25519 public key")]
    BadPublicKey,
    /// The signature does not verify under the key.
    #[error("Ed25519 signature does not verify")]
    BadSignature,
}

/// Verifies an Ed25519 signature by a raw public key.
///
/// Verification is strict (RFC 8032 plus rejection of small-order keys and non-canonical
/// encodings): a legitimate signer never produces what the strict check refuses.
pub fn verify(
    ed_public: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
    sig: &[u8; SIGNATURE_LEN],
) -> Result<(), VerifyError> {
    let key = VerifyingKey::from_bytes(ed_public).map_err(|_| VerifyError::BadPublicKey)?;
    if key.is_weak() {
        return Err(VerifyError::BadPublicKey);
    }
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .map_err(|_| VerifyError::BadSignature)
}

fn expand(prk: &Hkdf<Sha256>, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if prk.expand(label, out.as_mut()).is_err() {
        unreachable!("HKDF-SHA256 expand of 32 bytes");
    }
    out
}

#[cfg(test)]
mod tests;
