//! The link's handshake: the versions must match and each end proves it
//! holds the link secret, without sending it.
//!
//! The logic node sends a `Challenge` (its version and a fresh nonce). The
//! gateway answers `Hello`: its version, id and start epoch, its clients'
//! address, a nonce of its own, and HMAC-SHA256(secret, "im-link gateway" ·
//! challenge nonce · id · epoch). The logic node checks that and answers
//! `Welcome` with HMAC-SHA256(secret, "im-link logic" · gateway nonce), or
//! `Refused` with the reason, which both ends log. A replayed Hello fails
//! (the challenge is new each time); a node without the secret can neither
//! join nor pose as the logic tier.

use std::time::Duration;

use hmac::{Hmac, Mac};
use protocol::link::wire::pb::{self, link_frame::Kind};
use sha2::Sha256;

use super::{FrameReader, FrameWriter, LinkError, VERSION, random};

/// How long either end waits for the other's next handshake frame.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What a gateway says of itself.
#[derive(Debug, Clone)]
pub struct GatewayInfo {
    pub gateway: u32,
    pub epoch_ms: u64,
    pub client_addr: String,
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

fn gateway_proof(secret: &[u8], challenge: &[u8], info: &GatewayInfo) -> Hmac<Sha256> {
    mac(
        secret,
        &[
            b"im-link gateway",
            challenge,
            &info.gateway.to_be_bytes(),
            &info.epoch_ms.to_be_bytes(),
        ],
    )
}

fn logic_proof(secret: &[u8], nonce: &[u8]) -> Hmac<Sha256> {
    mac(secret, &[b"im-link logic", nonce])
}

fn version_mismatch(theirs: u32) -> String {
    format!("link version {theirs} offered, this end speaks version {VERSION}")
}

/// The logic node's side. Returns who connected, or why it was refused
/// (the gateway was told).
pub fn accept(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    secret: &[u8],
) -> Result<GatewayInfo, LinkError> {
    let challenge = random::<16>()?;
    writer.send(Kind::Challenge(pb::Challenge {
        version: VERSION,
        nonce: challenge.to_vec().into(),
    }))?;
    let hello = match reader.read()? {
        Kind::Hello(hello) => hello,
        other => {
            return Err(LinkError::Protocol(format!(
                "expected Hello, got {other:?}"
            )));
        }
    };
    let info = GatewayInfo {
        gateway: hello.gateway,
        epoch_ms: hello.epoch_ms,
        client_addr: hello.client_addr.clone(),
    };
    let refusal = if hello.version != VERSION {
        Some(version_mismatch(hello.version))
    } else if gateway_proof(secret, &challenge, &info)
        .verify_slice(&hello.proof)
        .is_err()
    {
        Some("the gateway's proof does not match this node's link secret".into())
    } else {
        None
    };
    if let Some(reason) = refusal {
        let _ = writer.send(Kind::Refused(pb::Refused {
            reason: reason.clone(),
        }));
        return Err(LinkError::Refused(reason));
    }
    let proof = logic_proof(secret, &hello.nonce).finalize().into_bytes();
    writer.send(Kind::Welcome(pb::Welcome {
        proof: proof.to_vec().into(),
    }))?;
    Ok(info)
}

/// The gateway's side.
pub fn connect(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    secret: &[u8],
    info: &GatewayInfo,
) -> Result<(), LinkError> {
    let challenge = match reader.read()? {
        Kind::Challenge(challenge) => challenge,
        other => {
            return Err(LinkError::Protocol(format!(
                "expected Challenge, got {other:?}"
            )));
        }
    };
    if challenge.version != VERSION {
        return Err(LinkError::Refused(version_mismatch(challenge.version)));
    }
    let nonce = random::<16>()?;
    let proof = gateway_proof(secret, &challenge.nonce, info)
        .finalize()
        .into_bytes();
    writer.send(Kind::Hello(pb::Hello {
        version: VERSION,
        gateway: info.gateway,
        epoch_ms: info.epoch_ms,
        client_addr: info.client_addr.clone(),
        nonce: nonce.to_vec().into(),
        proof: proof.to_vec().into(),
    }))?;
    match reader.read()? {
        Kind::Welcome(welcome) => logic_proof(secret, &nonce)
            .verify_slice(&welcome.proof)
            .map_err(|_| {
                LinkError::Refused(
                    "the logic node's proof does not match this gateway's link secret".into(),
                )
            }),
        Kind::Refused(refused) => Err(LinkError::Refused(refused.reason)),
        other => Err(LinkError::Protocol(format!(
            "expected Welcome, got {other:?}"
        ))),
    }
}
