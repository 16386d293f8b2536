//! What online users change about themselves: settings, extension, block list.

use super::*;
use crate::server::cluster::wire::UserChange;

impl Hub {
    /// New settings of a user: cached for routing and told to all their devices.
    pub fn settings_changed(&self, user_id: i64, settings: Settings) {
        self.changed(user_id, UserChange::Settings { settings });
    }

    /// A user's new extension: cached for placing calls and told to all their devices.
    pub fn extension_changed(&self, user_id: i64, extension: Option<String>) {
        self.changed(user_id, UserChange::Extension { extension });
    }

    /// A user's new block list: cached for routing and told to all their devices.
    pub fn blocked_changed(&self, user_id: i64, numbers: Vec<String>) {
        self.changed(user_id, UserChange::Blocked { numbers });
    }

    /// Applies a change here and has the other nodes (if any) apply it too.
    fn changed(&self, user_id: i64, change: UserChange) {
        self.apply_user_change(user_id, change.clone());
        self.broadcast_user(user_id, change);
    }

    /// Updates the cached user and tells their devices connected here.
    pub(super) fn apply_user_change(&self, user_id: i64, change: UserChange) {
        let mut inner = self.lock();
        let Some(u) = inner.users.get_mut(&user_id) else {
            return;
        };
        let msg = match change {
            UserChange::Settings { settings } => {
                u.settings = settings;
                ServerMsg::Settings { settings }
            }
            UserChange::Extension { extension } => {
                u.extension = extension.clone();
                ServerMsg::Extension { extension }
            }
            UserChange::Blocked { numbers } => {
                u.blocked = numbers.iter().cloned().collect();
                ServerMsg::Blocked { numbers }
            }
        };
        let devices = u.devices.clone();
        let text = encode(&msg);
        for d in devices {
            inner.send_text(d, text.clone());
        }
    }

    /// Whether calls can be placed (a PBX is configured).
    pub fn can_place_calls(&self) -> bool {
        self.pbx.read().is_some()
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
