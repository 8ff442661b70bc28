// Frames on the WebSocket: one binary message is one protobuf Frame
// (docs/protocol.md), without the TCP length prefix.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Frame, FrameSchema } from "../gen/im_pb.js";

export type Body = Frame["body"];
/** A body's case name: "sendReq", "push", ... */
export type BodyCase = NonNullable<Body["case"]>;
/** The value of the body of case `C`. */
export type BodyOf<C extends BodyCase> = Extract<Body, { case: C }>["value"];

export function encodeFrame(reqId: bigint, body: Body): Uint8Array {
  return toBinary(FrameSchema, create(FrameSchema, { reqId, body }));
}

export function decodeFrame(bytes: Uint8Array): Frame {
  return fromBinary(FrameSchema, bytes);
}
