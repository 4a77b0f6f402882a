//! Sizing PostgreSQL and Odoo from the resources allocated to an environment.
//!
//! One environment's memory is shared by its PostgreSQL and its Odoo processes, so PostgreSQL is
//! sized for half of it (the usual 25 % / 75 % rules for `shared_buffers` / `effective_cache_size`
//! applied to that half), and each Odoo process gets an equal share of the other half under its
//! soft limit. Connections follow the worker count: each Odoo process keeps at most `DB_MAXCONN`.

/// Connections one Odoo process may hold (`db_maxconn`).
pub const DB_MAXCONN: u32 = 8;
/// Cron threads (`max_cron_threads`); each is a process with its own connections.
pub const CRON_THREADS: u32 = 1;

/// PostgreSQL's settings, as `-c name=value` arguments of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postgres {
    pub shared_buffers_mb: u32,
    pub effective_cache_size_mb: u32,
    pub work_mem_mb: u32,
    pub maintenance_work_mem_mb: u32,
    pub max_connections: u32,
}

impl Postgres {
    pub fn for_resources(memory_mb: u32, workers: u32) -> Self {
        let share = memory_mb / 2;
        // Odoo's HTTP workers, its cron threads, the gevent (websocket) process, plus room for
        // Berth's own connections (health checks, dumps, queries).
        let processes = workers.max(1) + CRON_THREADS + 1;
        let max_connections = processes * DB_MAXCONN + 10;
        Postgres {
            shared_buffers_mb: (share / 4).max(128),
            effective_cache_size_mb: (share * 3 / 4).max(256),
            work_mem_mb: (share / 4 / max_connections).max(4),
            maintenance_work_mem_mb: (share / 8).clamp(64, 2048),
            max_connections,
        }
    }

    /// The server's command line: `postgres -c …`.
    pub fn command(&self) -> Vec<String> {
        let mut argv = vec!["postgres".to_string()];
        for (name, value) in [
            ("shared_buffers", format!("{}MB", self.shared_buffers_mb)),
            (
                "effective_cache_size",
                format!("{}MB", self.effective_cache_size_mb),
            ),
            ("work_mem", format!("{}MB", self.work_mem_mb)),
            (
                "maintenance_work_mem",
                format!("{}MB", self.maintenance_work_mem_mb),
            ),
            ("max_connections", self.max_connections.to_string()),
        ] {
            argv.push("-c".into());
            argv.push(format!("{name}={value}"));
        }
        argv
    }
}

/// Odoo's process limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Odoo {
    pub workers: u32,
    pub limit_memory_soft: u64,
    pub limit_memory_hard: u64,
}

impl Odoo {
    pub fn for_resources(memory_mb: u32, workers: u32) -> Self {
        let share = u64::from(memory_mb / 2) << 20;
        let processes = u64::from(workers.max(1) + CRON_THREADS);
        let soft = (share / processes).max(512 << 20);
        Odoo {
            workers,
            limit_memory_soft: soft,
            limit_memory_hard: soft + soft / 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_is_sized_from_memory_and_workers() {
        let pg = Postgres::for_resources(4096, 4);
        assert_eq!(pg.shared_buffers_mb, 512);
        assert_eq!(pg.effective_cache_size_mb, 1536);
        assert_eq!(pg.max_connections, (4 + 1 + 1) * 8 + 10);
        assert_eq!(pg.work_mem_mb, 512 / 58);
        assert!(pg.command().contains(&"max_connections=58".to_string()));
        // Small environments keep sane floors.
        let small = Postgres::for_resources(512, 0);
        assert_eq!(small.shared_buffers_mb, 128);
        assert_eq!(small.work_mem_mb, 4);
        assert_eq!(small.max_connections, 34);
    }

    #[test]
    fn odoo_processes_share_half_the_memory() {
        let odoo = Odoo::for_resources(4096, 3);
        assert_eq!(odoo.limit_memory_soft, (2048 << 20) / 4);
        assert_eq!(odoo.limit_memory_hard, odoo.limit_memory_soft * 5 / 4);
        assert_eq!(Odoo::for_resources(256, 8).limit_memory_soft, 512 << 20);
    }
}
