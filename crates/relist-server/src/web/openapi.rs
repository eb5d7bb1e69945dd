//! The OpenAPI 3 document of the JSON API ([`super::api`]), served at `/api/v1/openapi.json`.
//! `tests/it/http_api.rs` checks that it describes every route the API serves and that real
//! answers have the documented fields.
use serde_json::{json, Value};

use relist_core::history::MAX_PAGE_SIZE;

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(name: &str) -> Value {
    json!({ "content": { "application/json": { "schema": schema(name) } } })
}

fn answer(description: &str, name: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema(name) } } })
}

/// The error answers every authenticated route may give.
fn errors(extra: &[(&str, &str)]) -> Vec<(String, Value)> {
    let mut out = vec![
        (
            "400".to_string(),
            answer("Bad input; `error.field` names the field.", "Error"),
        ),
        (
            "401".to_string(),
            answer("No key, or an unknown or revoked one (once keys exist).", "Error"),
        ),
        (
            "403".to_string(),
            answer("The key's role or marketplace does not allow this.", "Error"),
        ),
        (
            "429".to_string(),
            answer("Too many requests in flight (limits.max_concurrent_requests).", "Error"),
        ),
        (
            "504".to_string(),
            answer("The request outlasted limits.request_timeout.", "Error"),
        ),
    ];
    for (code, what) in extra {
        out.push((code.to_string(), answer(what, "Error")));
    }
    out
}

fn responses(ok: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (code, what, name) in ok {
        m.insert(code.to_string(), answer(what, name));
    }
    for (code, v) in errors(extra) {
        m.insert(code, v);
    }
    Value::Object(m)
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "The takedown id.",
            "schema": { "type": "integer", "format": "uint64", "minimum": 1 } })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn ms() -> Value {
    json!({ "type": "integer", "format": "int64", "description": "Unix milliseconds" })
}

fn nullable(mut v: Value) -> Value {
    if let Some(t) = v.get("type").cloned() {
        v["type"] = json!([t, "null"]);
        v
    } else {
        json!({ "oneOf": [v, { "type": "null" }] })
    }
}

fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn verdict() -> Value {
    one_of(&["CLEAR", "REVIEW", "REUPLOAD"])
}

fn label() -> Value {
    one_of(&["UNREVIEWED", "CONFIRMED", "FALSE_POSITIVE"])
}

fn schemas() -> Value {
    json!({
        "Image": {
            "type": "object", "additionalProperties": false,
            "description": "One photo: the file as base64 (`data`), or hashes the client computed (`pdq` and/or `phash`), not both.",
            "properties": {
                "data": { "type": "string", "format": "byte", "description": "JPEG, PNG, WebP or GIF file, base64 (standard alphabet, padded)." },
                "pdq": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "PDQ hash, 64 hex." },
                "phash": { "type": "string", "pattern": "^[0-9a-fA-F]{16}$", "description": "64-bit DCT perceptual hash, 16 hex." },
                "pdq_quality": { "type": "integer", "minimum": 0, "maximum": 100, "description": "Quality of `pdq`, if known (default: trusted as 100)." }
            }
        },
        "Listing": {
            "type": "object", "additionalProperties": false, "required": ["marketplace", "listing_id"],
            "description": "A listing; it needs a title or at least one image.",
            "properties": {
                "marketplace": { "type": "string", "maxLength": 64 },
                "listing_id": { "type": "string", "maxLength": 256 },
                "seller_id": { "type": "string", "maxLength": 256 },
                "title": string(),
                "description": string(),
                "images": { "type": "array", "items": schema("Image") }
            }
        },
        "CheckRequest": {
            "type": "object", "additionalProperties": false, "required": ["listing"],
            "properties": {
                "listing": schema("Listing"),
                "dry_run": { "type": "boolean", "description": "Answer without recording the result in the history (the same verdict; match_id stays null)." }
            }
        },
        "RegisterRequest": {
            "type": "object", "additionalProperties": false, "required": ["listing"],
            "properties": {
                "listing": schema("Listing"),
                "reason": { "type": "string", "maxLength": 1000 },
                "taken_down_at_ms": ms()
            }
        },
        "ImageFingerprint": {
            "type": "object", "required": ["pdq", "pdq_quality", "phash"],
            "properties": {
                "pdq": nullable(string()),
                "pdq_quality": { "type": "integer" },
                "phash": nullable(string())
            }
        },
        "Fingerprints": {
            "type": "object", "required": ["images", "title_simhash", "normalized_title"],
            "properties": {
                "images": { "type": "array", "items": schema("ImageFingerprint") },
                "title_simhash": nullable(string()),
                "normalized_title": string()
            }
        },
        "ImageEvidence": {
            "type": "object", "required": ["candidate_image_index", "stored_image_index", "kind", "distance", "transform"],
            "properties": {
                "candidate_image_index": { "type": "integer" },
                "stored_image_index": { "type": "integer" },
                "kind": { "type": "string", "enum": ["pdq", "phash", "local", "pdq_part"] },
                "distance": { "type": "integer" },
                "transform": nullable(string()),
                "colour": { "type": "object" },
                "region": { "type": "boolean" }
            }
        },
        "Match": {
            "type": "object",
            "required": ["takedown_id", "marketplace", "listing_id", "seller_id", "images", "text_distance", "same_seller", "verdict", "score"],
            "properties": {
                "takedown_id": { "type": "integer" },
                "marketplace": string(),
                "listing_id": string(),
                "seller_id": string(),
                "images": { "type": "array", "items": schema("ImageEvidence") },
                "text_distance": nullable(json!({ "type": "integer" })),
                "same_seller": { "type": "boolean" },
                "verdict": verdict(),
                "score": { "type": "number" }
            }
        },
        "CheckResult": {
            "type": "object", "required": ["verdict", "score", "matches", "match_id", "fingerprints", "bank_stale"],
            "properties": {
                "bank_stale": { "type": "boolean", "description": "A replica of a shared store that has not reached it lately: the answer may miss takedowns registered elsewhere. Always false on a single box." },
                "verdict": verdict(),
                "score": { "type": "number", "minimum": 0, "maximum": 1 },
                "matches": { "type": "array", "items": schema("Match") },
                "match_id": nullable(json!({ "type": "integer", "description": "Set when the result was recorded in the history (non-clear)." })),
                "fingerprints": schema("Fingerprints")
            }
        },
        "Registered": {
            "type": "object", "required": ["takedown_id", "updated", "fingerprints"],
            "properties": {
                "takedown_id": { "type": "integer" },
                "updated": { "type": "boolean", "description": "True when (marketplace, listing_id) was registered before." },
                "fingerprints": schema("Fingerprints")
            }
        },
        "ListingInfo": {
            "type": "object", "required": ["marketplace", "listing_id", "seller_id", "title", "description"],
            "properties": {
                "marketplace": string(), "listing_id": string(), "seller_id": string(),
                "title": string(), "description": string()
            }
        },
        "Takedown": {
            "type": "object",
            "required": ["takedown_id", "listing", "reason", "taken_down_at_ms", "registered_at_ms", "updated_at_ms", "removed_at_ms", "fingerprints"],
            "properties": {
                "takedown_id": { "type": "integer" },
                "listing": schema("ListingInfo"),
                "reason": string(),
                "taken_down_at_ms": ms(),
                "registered_at_ms": ms(),
                "updated_at_ms": ms(),
                "removed_at_ms": nullable(ms()),
                "fingerprints": schema("Fingerprints")
            }
        },
        "Removed": {
            "type": "object", "required": ["takedown_id", "removed_at_ms"],
            "properties": { "takedown_id": { "type": "integer" }, "removed_at_ms": ms() }
        },
        "Review": {
            "type": "object", "required": ["label", "reviewer", "note", "at_ms"],
            "properties": { "label": label(), "reviewer": string(), "note": string(), "at_ms": ms() }
        },
        "MatchRecord": {
            "type": "object",
            "required": ["match_id", "at_ms", "source", "candidate", "verdict", "score", "matches", "label", "reviews"],
            "properties": {
                "match_id": { "type": "integer" },
                "at_ms": ms(),
                "source": { "type": "string", "enum": ["upload", "batch"] },
                "candidate": schema("ListingInfo"),
                "verdict": verdict(),
                "score": { "type": "number" },
                "matches": { "type": "array", "items": schema("Match") },
                "label": label(),
                "reviews": { "type": "array", "items": schema("Review") }
            }
        },
        "MatchPage": {
            "type": "object", "required": ["records", "next_page_token"],
            "properties": {
                "records": { "type": "array", "items": schema("MatchRecord") },
                "next_page_token": nullable(json!({ "type": "string", "description": "Pass as page_token for the next page; null on the last." }))
            }
        },
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {
                "error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "description": "INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, DISK_FULL, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, INTERNAL" },
                        "message": { "type": "string", "description": "Starts with the field's path when a field is at fault." },
                        "field": { "type": "string", "description": "The field at fault (bad input only), e.g. listing.images[0].pdq." }
                    }
                }
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let match_filters: Vec<Value> = [
        ("from", "Records at or after (Unix ms or RFC 3339).", string()),
        ("to", "Records before (Unix ms or RFC 3339).", string()),
        (
            "takedown",
            "Records matching this takedown.",
            json!({ "type": "integer", "minimum": 1 }),
        ),
        ("marketplace", "Records involving this marketplace.", string()),
        ("seller", "Records involving this seller.", string()),
        ("verdict", "REVIEW or REUPLOAD.", one_of(&["REVIEW", "REUPLOAD"])),
        (
            "min_score",
            "Lowest score.",
            json!({ "type": "number", "minimum": 0, "maximum": 1 }),
        ),
        ("label", "Review label.", label()),
        ("source", "upload or batch.", one_of(&["upload", "batch"])),
        (
            "page_size",
            "Records per page (default 50).",
            json!({ "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE }),
        ),
        ("page_token", "The previous page's next_page_token.", string()),
    ]
    .into_iter()
    .map(|(name, description, schema)| query(name, description, schema))
    .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "relist HTTP API",
            "version": "1",
            "description": "The gRPC API of relist (package relist.v1) as JSON over HTTP, on the daemon's web port (`relist serve --http`). Same API keys and roles as gRPC: `Authorization: Bearer <key>` once keys exist. See docs/http-api.md."
        },
        "components": {
            "securitySchemes": { "apiKey": { "type": "http", "scheme": "bearer", "description": "A relist API key (relist keys create)." } },
            "schemas": schemas()
        },
        "security": [ { "apiKey": [] } ],
        "paths": {
            "/api/v1/check": {
                "post": {
                    "operationId": "checkListing",
                    "summary": "Is this listing a re-upload of a taken-down one? (gRPC CheckListing; role checker.) Non-clear results are recorded in the match history.",
                    "requestBody": { "required": true, "content": json_body("CheckRequest")["content"] },
                    "responses": responses(&[("200", "The verdict, score and evidence.", "CheckResult")], &[("413", "The body is over the size limit."), ("415", "Content-Type is not application/json.")])
                }
            },
            "/api/v1/takedowns": {
                "post": {
                    "operationId": "registerTakedown",
                    "summary": "Registers a taken-down listing; idempotent per (marketplace, listing_id). (gRPC RegisterTakedown; role writer.)",
                    "requestBody": { "required": true, "content": json_body("RegisterRequest")["content"] },
                    "responses": responses(&[("201", "Registered.", "Registered"), ("200", "Updated: it was registered before.", "Registered")], &[("413", "The body is over the size limit."), ("415", "Content-Type is not application/json."), ("507", "The disk is (nearly) full.")])
                }
            },
            "/api/v1/takedowns/{id}": {
                "parameters": [ id_param() ],
                "get": {
                    "operationId": "getTakedown",
                    "summary": "A stored takedown. (gRPC GetTakedown; role writer.)",
                    "responses": responses(&[("200", "The takedown.", "Takedown")], &[("404", "No such takedown.")])
                },
                "delete": {
                    "operationId": "removeTakedown",
                    "summary": "Reverses a takedown: it stops matching at once; its past matches stay in the history. (gRPC RemoveTakedown; role writer.)",
                    "responses": responses(&[("200", "Removed.", "Removed")], &[("404", "No such takedown.")])
                }
            },
            "/api/v1/matches": {
                "get": {
                    "operationId": "queryMatches",
                    "summary": "The match history, newest first. (gRPC QueryMatches; role analyst; a scoped key sees its marketplace only.)",
                    "parameters": match_filters,
                    "responses": responses(&[("200", "A page of records.", "MatchPage")], &[])
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document (no key needed).",
                    "security": [],
                    "responses": { "200": { "description": "The OpenAPI document.", "content": { "application/json": { "schema": { "type": "object" } } } } }
                }
            }
        }
    })
}
