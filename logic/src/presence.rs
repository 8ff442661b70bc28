//! Who is online: each user's devices and the gateway session each is on.
//!
//! A user may be online on several devices (distinct `device_id`s); a second
//! login of the same `(uid, device_id)` replaces the first, whose session
//! the caller then kicks. Fan-out asks here for a user's sessions.

use std::collections::HashMap;

use parking_lot::RwLock;
use protocol::link::SessionId;

/// Where each gateway's clients connect, and when that gateway started,
/// by gateway id: the "which entry" of the login info the presence
/// directory publishes. Written by whoever learns of a gateway (the
/// all-in-one node at start, the link at each gateway's handshake), read
/// by the Redis keeper.
#[derive(Debug, Default)]
pub struct GatewayAddrs(RwLock<HashMap<u32, GatewayAddr>>);

/// One gateway, as the presence directory shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayAddr {
    /// Where its clients connect.
    pub client_addr: String,
    /// When it started (Unix ms): with its id, which run of it this is.
    pub epoch_ms: u64,
}

impl GatewayAddrs {
    pub fn set(&self, gateway: u32, addr: GatewayAddr) {
        self.0.write().insert(gateway, addr);
    }

    pub fn remove(&self, gateway: u32) {
        self.0.write().remove(&gateway);
    }

    /// The gateway's address and start; empty if it never said.
    pub fn get(&self, gateway: u32) -> GatewayAddr {
        self.0.read().get(&gateway).cloned().unwrap_or_default()
    }
}

/// One logged-in device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub platform: i32,
    pub session: SessionId,
    /// Wall-clock login time, milliseconds.
    pub login_ms: u64,
}

#[derive(Debug, Default)]
pub struct Presence {
    /// Online devices per user; a user offline has no entry. (No map from
    /// session to user: every call that names a session names its user
    /// too, `Upcall::Closed` included, and the map cost about a tenth of an
    /// idle session's memory.)
    by_uid: HashMap<u64, Vec<Device>>,
}

impl Presence {
    /// Records `device` online for `uid`. Returns the session it replaces
    /// (same uid and device_id), which the caller kicks.
    pub fn login(&mut self, uid: u64, device: Device) -> Option<SessionId> {
        // Most users are online on one device: room for one, not the four
        // a first push would allocate (this list is most of an idle
        // session's memory in the logic tier).
        let devices = self
            .by_uid
            .entry(uid)
            .or_insert_with(|| Vec::with_capacity(1));
        match devices.iter_mut().find(|d| d.device_id == device.device_id) {
            Some(existing) => Some(std::mem::replace(existing, device).session),
            None => {
                devices.push(device);
                None
            }
        }
    }

    /// Forgets `uid`'s closed session; returns its device if it was online
    /// (a session that was replaced, or whose login was refused, was not).
    pub fn logout(&mut self, session: SessionId, uid: u64) -> Option<Device> {
        let devices = self.by_uid.get_mut(&uid)?;
        let at = devices.iter().position(|d| d.session == session)?;
        let device = devices.remove(at);
        if devices.is_empty() {
            self.by_uid.remove(&uid);
        }
        Some(device)
    }

    /// Forgets every session of a gateway that is gone; returns each one's
    /// uid and device. A scan of every user: gateways go rarely.
    pub fn drop_gateway(&mut self, gateway: u32) -> Vec<(u64, Device)> {
        let mut gone = Vec::new();
        self.by_uid.retain(|uid, devices| {
            devices.retain(|d| {
                let stays = d.session.gateway != gateway;
                if !stays {
                    gone.push((*uid, d.clone()));
                }
                stays
            });
            !devices.is_empty()
        });
        gone
    }

    /// The user's online devices.
    pub fn devices(&self, uid: u64) -> &[Device] {
        self.by_uid.get(&uid).map_or(&[], Vec::as_slice)
    }

    pub fn is_online(&self, session: SessionId, uid: u64) -> bool {
        self.devices(uid).iter().any(|d| d.session == session)
    }

    pub fn online_users(&self) -> usize {
        self.by_uid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, serial: u64) -> Device {
        Device {
            device_id: id.into(),
            platform: 1,
            session: SessionId {
                gateway: 1,
                slot: serial as u32,
                serial,
            },
            login_ms: 0,
        }
    }

    #[test]
    fn same_device_replaces_other_devices_add() {
        let mut presence = Presence::default();
        assert_eq!(presence.login(1, device("phone", 1)), None);
        assert_eq!(presence.login(1, device("pc", 2)), None);
        let replaced = presence.login(1, device("phone", 3));
        assert_eq!(replaced.map(|s| s.serial), Some(1));
        let serials: Vec<u64> = presence
            .devices(1)
            .iter()
            .map(|d| d.session.serial)
            .collect();
        assert_eq!(serials, vec![3, 2]);
        // The replaced session closing later changes nothing.
        assert_eq!(presence.logout(device("phone", 1).session, 1), None);
        assert_eq!(presence.devices(1).len(), 2);
    }

    #[test]
    fn a_gone_gateway_takes_its_sessions_and_no_others() {
        let mut presence = Presence::default();
        let on = |gateway, id: &str, serial| {
            let mut d = device(id, serial);
            d.session.gateway = gateway;
            d
        };
        presence.login(1, on(7, "phone", 1));
        presence.login(1, on(8, "pc", 2));
        presence.login(2, on(7, "phone", 3));
        let mut gone: Vec<(u64, String)> = presence
            .drop_gateway(7)
            .into_iter()
            .map(|(uid, d)| (uid, d.device_id))
            .collect();
        gone.sort();
        assert_eq!(gone, vec![(1, "phone".into()), (2, "phone".into())]);
        assert_eq!(presence.devices(1).len(), 1);
        assert_eq!(presence.online_users(), 1);
        assert!(presence.drop_gateway(7).is_empty());
    }

    #[test]
    fn last_logout_takes_user_offline() {
        let mut presence = Presence::default();
        presence.login(1, device("phone", 1));
        assert_eq!(
            presence.logout(device("phone", 1).session, 2),
            None,
            "not uid 2's"
        );
        assert_eq!(
            presence.logout(device("phone", 1).session, 1),
            Some(device("phone", 1))
        );
        assert!(presence.devices(1).is_empty());
        assert_eq!(presence.online_users(), 0);
    }
}
