//! The messaging contract (docs/protocol.md), end to end: real clients over
//! real TCP through a real gateway, logic tier and store. One suite, run
//! against every storage backend: the embedded SQLite and MySQL/MariaDB
//! (a private `mariadbd` this test binary starts, or `IM_TEST_MYSQL_URL`;
//! each test on a database of its own), and MySQL with Redis (a private
//! `redis-server`, or `IM_TEST_REDIS_URL`; each test on a key prefix of its
//! own), and MySQL sharded over two databases; and once with the tiers split,
//! one logic node and two gateways over the TCP link, clients spread over
//! the gateways; and once with every other client over TLS.

mod harness;
mod receiver;

/// One module per backend, each running every case of `cases.rs`.
macro_rules! suite {
    ($name:ident, $store:expr) => {
        mod $name {
            use super::harness::{Store, TestNode};
            use std::thread;
            use std::time::Duration;

            use super::harness::*;
            use client::ClientError;
            use protocol::{Body, ErrorCode, pb};
            use std::collections::HashSet;

            fn node() -> TestNode {
                TestNode::with($store, |_| {})
            }

            fn node_with(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
                TestNode::with($store, tweak)
            }

            include!("cases.rs");
        }
    };
}

suite!(sqlite, Store::Sqlite);
suite!(mysql, Store::MySql);
suite!(mysql_redis, Store::MySqlRedis);
suite!(mysql_sharded, Store::MySqlSharded);
suite!(split, Store::Split);
suite!(tls, Store::Tls);
