//! Server reflection v1 (grpc.reflection.v1, beside v1alpha): a reflection client resolves
//! CheckListing's request and response types, and every file they import down to the
//! well-known types (google/protobuf/timestamp.proto), from the daemon alone.
use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorProto;
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

use crate::common::*;

/// The files of one reflection answer, decoded.
async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> Vec<FileDescriptorProto> {
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request.clone()),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection call")
        .into_inner();
    let resp = stream.message().await.expect("answer").expect("one answer");
    match resp.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => f
            .file_descriptor_proto
            .iter()
            .map(|b| FileDescriptorProto::decode(b.as_slice()).expect("a file descriptor"))
            .collect(),
        other => panic!("{request:?}: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_resolves_check_listing_down_to_the_well_known_types() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let mut client = ServerReflectionClient::new(endpoint.connect_lazy());

    let files = ask(
        &mut client,
        MessageRequest::FileContainingSymbol("relist.v1.Relist".into()),
    )
    .await;
    let relist = files
        .iter()
        .find(|f| f.package() == "relist.v1")
        .expect("the file of relist.v1.Relist");
    let service = relist.service.iter().find(|s| s.name() == "Relist").expect("service");
    let rpc = service
        .method
        .iter()
        .find(|m| m.name() == "CheckListing")
        .expect("CheckListing");
    assert_eq!(rpc.input_type(), ".relist.v1.CheckListingRequest");
    assert!(relist.dependency.iter().any(|d| d == "google/protobuf/timestamp.proto"));

    // Every import, transitively, is served by file name: nothing to fetch elsewhere.
    let mut seen: BTreeSet<String> = files.iter().map(|f| f.name().to_string()).collect();
    let mut todo: Vec<String> = files.iter().flat_map(|f| f.dependency.clone()).collect();
    while let Some(name) = todo.pop() {
        let got = ask(&mut client, MessageRequest::FileByFilename(name.clone())).await;
        let file = got
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{name} is not served"));
        if name == "google/protobuf/timestamp.proto" {
            assert!(file.message_type.iter().any(|m| m.name() == "Timestamp"));
        }
        for f in got {
            if seen.insert(f.name().to_string()) {
                todo.extend(f.dependency.clone());
            }
        }
        seen.insert(name);
    }
    assert!(seen.contains("google/protobuf/timestamp.proto"), "{seen:?}");
    server.stop().await;
}
