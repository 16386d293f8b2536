//! What online users change about themselves: settings, extension, block list.

use super::*;

impl Hub {
    /// New settings of a user: cached for routing and told to all their devices.
    pub fn settings_changed(&self, user_id: i64, settings: Settings) {
        let mut inner = self.inner.lock();
        let devices = match inner.users.get_mut(&user_id) {
            Some(u) => {
                u.settings = settings;
                u.devices.clone()
            }
            None => return,
        };
        for d in devices {
            inner.send(d, &ServerMsg::Settings { settings });
        }
    }

    /// A user's new extension: cached for placing calls and told to all their devices.
    pub fn extension_changed(&self, user_id: i64, extension: Option<String>) {
        let mut inner = self.inner.lock();
        let devices = match inner.users.get_mut(&user_id) {
            Some(u) => {
                u.extension = extension.clone();
                u.devices.clone()
            }
            None => return,
        };
        for d in devices {
            inner.send(d, &ServerMsg::Extension { extension: extension.clone() });
        }
    }

    /// Whether calls can be placed (a PBX is configured).
    pub fn can_place_calls(&self) -> bool {
        self.pbx.read().is_some()
    }

    /// A user's new block list: cached for routing and told to all their devices.
    pub fn blocked_changed(&self, user_id: i64, numbers: Vec<String>) {
        let mut inner = self.inner.lock();
        let devices = match inner.users.get_mut(&user_id) {
            Some(u) => {
                u.blocked = numbers.iter().cloned().collect();
                u.devices.clone()
            }
            None => return,
        };
        let msg = ServerMsg::Blocked { numbers };
        for d in devices {
            inner.send(d, &msg);
        }
    }

    /// The region a user's national numbers are read in.
    pub fn region_of_user(&self, user_id: i64) -> String {
        self.inner
            .lock()
            .users
            .get(&user_id)
            .map(|u| u.region.clone())
            .unwrap_or_else(|| self.cfg.default_region.clone())
    }
}
