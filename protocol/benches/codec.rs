//! Encode+decode throughput of the frame codec for a SendReq with 64 bytes of
//! content: the most common frame a server reads.
//!
//! cargo bench -p im-protocol --bench codec

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocol::{Frame, FrameCodec, pb};
use std::hint::black_box;

fn send_req_frame() -> Frame {
    Frame {
        req_id: 123_456,
        body: Some(
            pb::SendReq {
                to_uid: 10_000_042,
                client_msg_id: "c3f1a2b4-0d5e-4f60-9a7b-8c9d0e1f2a3b".to_owned(),
                content_type: 1,
                content: vec![b'x'; 64],
            }
            .into(),
        ),
    }
}

fn encode_decode(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let frame = send_req_frame();
    let mut wire = BytesMut::new();
    codec.encode(&frame, &mut wire).unwrap();
    let wire_len = wire.len() as u64;

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_req_64B_frames", |b| {
        let mut buf = BytesMut::with_capacity(1024);
        b.iter(|| {
            codec.encode(black_box(&frame), &mut buf).unwrap();
            black_box(codec.decode(&mut buf).unwrap().unwrap());
        })
    });
    group.throughput(Throughput::Bytes(wire_len));
    group.bench_function("send_req_64B_bytes", |b| {
        let mut buf = BytesMut::with_capacity(1024);
        b.iter(|| {
            codec.encode(black_box(&frame), &mut buf).unwrap();
            black_box(codec.decode(&mut buf).unwrap().unwrap());
        })
    });
    group.finish();
}

criterion_group!(benches, encode_decode);
criterion_main!(benches);
