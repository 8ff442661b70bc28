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
    } else if info.gateway == logic::direct::DIRECT_GATEWAY {
        Some("gateway id 0 is reserved for the logic node's own requests".into())
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

#[cfg(test)]
mod tests {
    //! Both sides of the handshake over a real loopback connection.

    use std::net::{TcpListener, TcpStream};
    use std::thread;

    use super::*;

    fn info() -> GatewayInfo {
        GatewayInfo {
            gateway: 0xabcd_0123,
            epoch_ms: 1_700_000_000_000,
            client_addr: "127.0.0.1:7001".into(),
        }
    }

    fn ends(stream: TcpStream) -> (FrameReader, FrameWriter) {
        let reader = FrameReader::new(stream.try_clone().unwrap(), 5).unwrap();
        (reader, FrameWriter::new(stream))
    }

    /// Runs the logic side with `logic_secret` against `gateway`; returns
    /// what each side concluded.
    fn shake(
        logic_secret: &'static [u8],
        gateway: impl FnOnce(&mut FrameReader, &mut FrameWriter) -> Result<(), LinkError>
        + Send
        + 'static,
    ) -> (Result<GatewayInfo, LinkError>, Result<(), LinkError>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway_side = thread::spawn(move || {
            let (mut reader, mut writer) = ends(TcpStream::connect(addr).unwrap());
            gateway(&mut reader, &mut writer)
        });
        let (stream, _) = listener.accept().unwrap();
        let (mut reader, mut writer) = ends(stream);
        let logic = accept(&mut reader, &mut writer, logic_secret);
        (logic, gateway_side.join().unwrap())
    }

    #[test]
    fn the_same_secret_links_and_the_logic_side_learns_who_connected() {
        let (logic, gateway) = shake(b"secret", |r, w| connect(r, w, b"secret", &info()));
        let learned = logic.expect("accepted");
        assert_eq!(
            (
                learned.gateway,
                learned.epoch_ms,
                learned.client_addr.as_str()
            ),
            (0xabcd_0123, 1_700_000_000_000, "127.0.0.1:7001")
        );
        gateway.expect("welcomed");
    }

    #[test]
    fn another_secret_is_refused_with_the_reason_on_both_sides() {
        let (logic, gateway) = shake(b"secret", |r, w| connect(r, w, b"other", &info()));
        assert!(
            matches!(&logic, Err(LinkError::Refused(reason)) if reason.contains("link secret")),
            "{logic:?}"
        );
        assert!(
            matches!(&gateway, Err(LinkError::Refused(reason)) if reason.contains("link secret")),
            "{gateway:?}"
        );
    }

    #[test]
    fn another_version_is_refused_and_says_both_versions() {
        let (logic, gateway) = shake(b"secret", |reader, writer| {
            let Kind::Challenge(challenge) = reader.read()? else {
                return Err(LinkError::Protocol("no challenge".into()));
            };
            let proof = gateway_proof(b"secret", &challenge.nonce, &info());
            writer.send(Kind::Hello(pb::Hello {
                version: VERSION + 1,
                gateway: info().gateway,
                epoch_ms: info().epoch_ms,
                client_addr: String::new(),
                nonce: vec![0; 16].into(),
                proof: proof.finalize().into_bytes().to_vec().into(),
            }))?;
            match reader.read()? {
                Kind::Refused(refused) => Err(LinkError::Refused(refused.reason)),
                other => Err(LinkError::Protocol(format!("{other:?}"))),
            }
        });
        let expected = format!(
            "link version {} offered, this end speaks version {VERSION}",
            VERSION + 1
        );
        assert!(
            matches!(&logic, Err(LinkError::Refused(r)) if *r == expected),
            "{logic:?}"
        );
        assert!(
            matches!(&gateway, Err(LinkError::Refused(r)) if *r == expected),
            "{gateway:?}"
        );
    }

    #[test]
    fn a_peer_posing_as_the_logic_tier_without_the_secret_is_caught() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Welcomes anyone, with a proof made up.
        let impostor = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let (mut reader, mut writer) = ends(stream);
            writer.send(Kind::Challenge(pb::Challenge {
                version: VERSION,
                nonce: vec![1; 16].into(),
            }))?;
            reader.read()?;
            writer.send(Kind::Welcome(pb::Welcome {
                proof: vec![0; 32].into(),
            }))
        });
        let (mut reader, mut writer) = ends(TcpStream::connect(addr).unwrap());
        let gateway = connect(&mut reader, &mut writer, b"secret", &info());
        assert!(
            matches!(&gateway, Err(LinkError::Refused(r)) if r.contains("logic node's proof")),
            "{gateway:?}"
        );
        impostor.join().unwrap().unwrap();
    }
}
