//! TLS identity binding: each side's certificate carries its Ed25519 key and a signature over
//! the certificate's own public key, so a TLS handshake proves a NodeId.
//!
//! The certificate is a throwaway self-signed ECDSA P-256 one (serial 1, CN `nodenet`, valid
//! from 1970 to 9999) with a non-critical extension, OID `1.3.6.1.4.1.58147.1.1`, whose value
//! is exactly 96 raw bytes: `ed_pub(32) | Ed25519(identity key, DER SubjectPublicKeyInfo)(64)`.
//! The signature covers the SPKI bytes as they are, with no domain prefix (tier 1: this is
//! what the reference signs).
//!
//! The verifiers replace chain, name and expiry checks (meaningless for throwaway
//! certificates) with exactly this: parse the leaf, find the extension, check its length,
//! verify the signature, derive the NodeId. They authenticate; whether the NodeId is the one
//! wanted is the dialer's check after the handshake.

use std::sync::Arc;

use nodenet_identity::{Identity, derive_id, verify};
use nodenet_kad::NodeId;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// The identity extension's OID, as arcs.
pub const EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 58147, 1, 1];

/// The identity extension's OID, dotted.
pub const EXTENSION_OID_STR: &str = "1.3.6.1.4.1.58147.1.1";

/// Length of the extension's value: an Ed25519 key and a signature.
pub const EXTENSION_LEN: usize = 96;

/// Why a certificate does not prove a NodeId.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerCertError {
    /// Not a parseable X.509 certificate.
    #[error("certificate does not parse")]
    Malformed,
    /// No nodenet identity extension.
    #[error("certificate has no nodenet identity extension")]
    MissingExtension,
    /// The extension is not exactly 96 bytes.
    #[error("identity extension is {0} bytes, expected {EXTENSION_LEN}")]
    BadExtensionLength(usize),
    /// The signature over the certificate key does not verify under the embedded Ed25519 key.
    #[error("identity extension signature does not verify")]
    BadSignature,
    /// The peer sent no certificate.
    #[error("peer presented no certificate")]
    NoCertificate,
}

/// The extension value for `identity` and a certificate key's DER SubjectPublicKeyInfo.
pub fn extension_value(identity: &Identity, spki_der: &[u8]) -> [u8; EXTENSION_LEN] {
    let mut v = [0u8; EXTENSION_LEN];
    v[..32].copy_from_slice(&identity.ed_public());
    v[32..].copy_from_slice(&identity.sign(spki_der));
    v
}

/// Checks a DER certificate's identity extension and returns the NodeId it proves.
pub fn verify_peer_cert(der: &[u8]) -> Result<NodeId, PeerCertError> {
    verify_peer_cert_key(der).map(|(id, _)| id)
}

/// Like [`verify_peer_cert`], also returning the proven Ed25519 key.
pub(crate) fn verify_peer_cert_key(der: &[u8]) -> Result<(NodeId, [u8; 32]), PeerCertError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| PeerCertError::Malformed)?;
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == EXTENSION_OID_STR)
        .ok_or(PeerCertError::MissingExtension)?;
    let id = verify_extension(ext.value, cert.tbs_certificate.subject_pki.raw)?;
    let key: [u8; 32] = ext.value[..32]
        .try_into()
        .map_err(|_| PeerCertError::Malformed)?;
    Ok((id, key))
}

/// Checks a raw extension value against the SPKI it claims to sign.
pub fn verify_extension(value: &[u8], spki_der: &[u8]) -> Result<NodeId, PeerCertError> {
    let value: &[u8; EXTENSION_LEN] = value
        .try_into()
        .map_err(|_| PeerCertError::BadExtensionLength(value.len()))?;
    let (ed_pub, sig) = value.split_at(32);
    let ed_pub: &[u8; 32] = ed_pub.try_into().map_err(|_| PeerCertError::Malformed)?;
    let sig: &[u8; 64] = sig.try_into().map_err(|_| PeerCertError::Malformed)?;
    verify(ed_pub, spki_der, sig).map_err(|_| PeerCertError::BadSignature)?;
    Ok(derive_id(ed_pub))
}

/// A fresh certificate and key for `identity`.
pub(crate) struct LocalCert {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
}

impl LocalCert {
    pub(crate) fn generate(identity: &Identity) -> Result<Self, rcgen::Error> {
        Self::generate_with(identity, |id, spki| extension_value(id, spki).to_vec())
    }

    /// Builds a certificate whose extension value `ext` computes: tests use it to forge bad
    /// ones.
    pub(crate) fn generate_with(
        identity: &Identity,
        ext: impl FnOnce(&Identity, &[u8]) -> Vec<u8>,
    ) -> Result<Self, rcgen::Error> {
        use rcgen::{
            CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, PublicKeyData,
            SerialNumber, date_time_ymd,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let value = ext(identity, &key.subject_public_key_info());
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.serial_number = Some(SerialNumber::from(1u64));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "nodenet");
        params.distinguished_name = dn;
        params.not_before = date_time_ymd(1970, 1, 1);
        params.not_after = date_time_ymd(9999, 12, 31) + std::time::Duration::from_secs(86_399);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(EXTENSION_OID, value));
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Verifies the peer's certificate in either direction.
#[derive(Debug)]
pub(crate) struct NodeIdVerifier {
    provider: Arc<CryptoProvider>,
}

impl NodeIdVerifier {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(Self { provider })
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        verify_peer_cert(end_entity).map(|_| ()).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for NodeIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for NodeIdVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes()
    }
}
