//! Bad bytes on the wire get typed errors; the node keeps serving.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use steadfast::client::CreateOptions;
use steadfast::command::Attributes;
use steadfast::limits::FRAME_BYTES_MAX;
use steadfast::wire::{self, ClientRequest, Kind, RequestBody, ResponseBody, WireError};
use steadfast::{Error, GroupId, SessionId};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::support::{serial, Cluster};

async fn ask(addr: &str, frame: Bytes) -> ResponseBody {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    framed.send(frame).await.expect("send");
    let reply = framed.next().await.expect("a reply").expect("a frame");
    wire::decode_body(&reply).expect("a decodable reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_typed_errors_and_the_node_keeps_serving() {
    let _serial = serial().await;
    let cluster = Cluster::start(1, 2);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let addr = cluster.addrs[0].clone();
    let read = RequestBody::Client(ClientRequest::Read {
        id: SessionId::generate(),
    });

    tracing::info!("--- a frame from another protocol version");
    let mut frame = wire::encode(Kind::Request, 1, GroupId(0), &read).to_vec();
    frame[0] = 99;
    let reply = ask(&addr, frame.into()).await;
    assert!(
        matches!(
            reply,
            ResponseBody::Error(WireError::ProtocolVersion {
                got: 99,
                supported: 1
            })
        ),
        "{reply:?}"
    );

    tracing::info!("--- a body that is not a request");
    let mut frame = wire::encode(Kind::Request, 2, GroupId(0), &read).to_vec();
    frame.truncate(wire::HEADER_BYTES);
    frame.extend_from_slice(&[0xff; 9]);
    let reply = ask(&addr, frame.into()).await;
    assert!(
        matches!(reply, ResponseBody::Error(WireError::Malformed(_))),
        "{reply:?}"
    );

    tracing::info!("--- a group the node does not host");
    let reply = ask(&addr, wire::encode(Kind::Request, 3, GroupId(4000), &read)).await;
    assert!(
        matches!(reply, ResponseBody::Error(WireError::UnknownGroup(4000))),
        "{reply:?}"
    );

    tracing::info!("--- a length prefix beyond the frame limit closes that connection only");
    let mut raw = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    raw.write_all(&((FRAME_BYTES_MAX as u32) + 1).to_be_bytes())
        .await
        .expect("write");
    raw.write_all(&[0u8; 64]).await.expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::io::AsyncReadExt::read(&mut raw, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the node closes a connection that sent an oversized frame"
    );

    tracing::info!("--- an oversized session is refused with a typed error");
    let big = Attributes::from([(
        "blob".to_string(),
        vec![7u8; steadfast::limits::SESSION_BYTES_MAX + 1],
    )]);
    match client.create(big, CreateOptions::default()).await {
        Err(Error::TooLarge { bytes, limit }) => assert!(bytes > limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }

    tracing::info!("--- the node still serves");
    let (id, w) = client
        .create(Attributes::new(), CreateOptions::default())
        .await
        .expect("create");
    assert_eq!(
        client.get(id).await.expect("get").expect("present").version,
        w.version
    );
}
