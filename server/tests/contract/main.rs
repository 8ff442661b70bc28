//! The messaging contract (docs/protocol.md), end to end: real clients over
//! real TCP through a real gateway, logic tier and store. One suite, run
//! against every storage backend: the embedded SQLite and MySQL/MariaDB
//! (a private `mariadbd` this test binary starts, or `IM_TEST_MYSQL_URL`;
//! each test on a database of its own), and MySQL with Redis (a private
//! `redis-server`, or `IM_TEST_REDIS_URL`; each test on a key prefix of its
//! own), and MySQL sharded over two databases.

mod harness;

mod sqlite {
    use super::harness::{Store, TestNode};
    use std::thread;
    use std::time::Duration;

    use super::harness::*;
    use client::ClientError;
    use protocol::{Body, ErrorCode, pb};
    use std::collections::HashSet;

    fn node() -> TestNode {
        TestNode::with(Store::Sqlite, |_| {})
    }

    fn node_with(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
        TestNode::with(Store::Sqlite, tweak)
    }

    include!("cases.rs");
}

mod mysql {
    use super::harness::{Store, TestNode};
    use std::thread;
    use std::time::Duration;

    use super::harness::*;
    use client::ClientError;
    use protocol::{Body, ErrorCode, pb};
    use std::collections::HashSet;

    fn node() -> TestNode {
        TestNode::with(Store::MySql, |_| {})
    }

    fn node_with(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
        TestNode::with(Store::MySql, tweak)
    }

    include!("cases.rs");
}

mod mysql_redis {
    use super::harness::{Store, TestNode};
    use std::thread;
    use std::time::Duration;

    use super::harness::*;
    use client::ClientError;
    use protocol::{Body, ErrorCode, pb};
    use std::collections::HashSet;

    fn node() -> TestNode {
        TestNode::with(Store::MySqlRedis, |_| {})
    }

    fn node_with(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
        TestNode::with(Store::MySqlRedis, tweak)
    }

    include!("cases.rs");
}

mod mysql_sharded {
    use super::harness::{Store, TestNode};
    use std::thread;
    use std::time::Duration;

    use super::harness::*;
    use client::ClientError;
    use protocol::{Body, ErrorCode, pb};
    use std::collections::HashSet;

    fn node() -> TestNode {
        TestNode::with(Store::MySqlSharded, |_| {})
    }

    fn node_with(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
        TestNode::with(Store::MySqlSharded, tweak)
    }

    include!("cases.rs");
}
