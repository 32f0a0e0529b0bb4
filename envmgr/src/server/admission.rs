//! Admission: the capacity promised to live sessions, reserved when a session is made and
//! released when it ends, and what is free.

use super::Server;
use crate::error::ServerError;

impl Server {
    /// Reserves resources for a session, or names the one that is short.
    pub(super) fn admit(
        &self,
        cpu_msps: u64,
        memory_mb: u64,
        net_kbps: u64,
    ) -> Result<(), ServerError> {
        let mut reserved = self
            .reserved
            .lock()
            .map_err(|_| ServerError::internal("capacity lock"))?;
        let capacity = &self.config.capacity;
        let checks = [
            (
                "CPU",
                "CPUmsps",
                cpu_msps,
                capacity.cpu_msps.saturating_sub(reserved.cpu_msps),
            ),
            (
                "memory",
                "MB",
                memory_mb,
                capacity.memory_mb.saturating_sub(reserved.memory_mb),
            ),
            (
                "network",
                "kbps",
                net_kbps,
                capacity.net_kbps.saturating_sub(reserved.net_kbps),
            ),
        ];
        for (resource, unit, asked, free) in checks {
            if asked > free {
                return Err(ServerError::exhausted(format!(
                    "not enough {resource}: {asked} {unit} asked, {free} {unit} free"
                )));
            }
        }
        if reserved.sessions >= capacity.sessions_max {
            return Err(ServerError::exhausted(format!(
                "not enough sessions: all {} are in use",
                capacity.sessions_max
            )));
        }
        reserved.cpu_msps += cpu_msps;
        reserved.memory_mb += memory_mb;
        reserved.net_kbps += net_kbps;
        reserved.sessions += 1;
        Ok(())
    }

    pub(super) fn release(&self, cpu_msps: u64, memory_mb: u64, net_kbps: u64) {
        if let Ok(mut reserved) = self.reserved.lock() {
            reserved.cpu_msps = reserved.cpu_msps.saturating_sub(cpu_msps);
            reserved.memory_mb = reserved.memory_mb.saturating_sub(memory_mb);
            reserved.net_kbps = reserved.net_kbps.saturating_sub(net_kbps);
            reserved.sessions = reserved.sessions.saturating_sub(1);
        }
    }

    /// Free capacity: (cpu_msps, memory_mb, net_kbps, live sessions).
    pub fn free(&self) -> (u64, u64, u64, u32) {
        let reserved = self.reserved.lock().map(|r| *r).unwrap_or_default();
        let capacity = &self.config.capacity;
        (
            capacity.cpu_msps.saturating_sub(reserved.cpu_msps),
            capacity.memory_mb.saturating_sub(reserved.memory_mb),
            capacity.net_kbps.saturating_sub(reserved.net_kbps),
            reserved.sessions,
        )
    }

    /// Sessions per environment type.
    pub fn sessions_of_type(&self, env_type: &str) -> u32 {
        self.sessions
            .lock()
            .map(|sessions| {
                sessions
                    .values()
                    .filter(|s| s.row.env_type == env_type && s.ended.borrow().is_none())
                    .count() as u32
            })
            .unwrap_or(0)
    }
}
