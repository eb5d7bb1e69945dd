#!/usr/bin/env bash
# gRPC load from outside: h2load (nghttp2's HTTP/2 load tool) against a release daemon this
# script starts, then `cargo bench --bench grpc_load` in the same run, so that both load
# tools' figures come from the same machine state.
#
#   benches/h2load.sh
#   RELIST_H2LOAD_TAKEDOWNS=50000 RELIST_H2LOAD_PHOTOS=300 RELIST_H2LOAD_N=200000 benches/h2load.sh
#
# The bank: RELIST_H2LOAD_TAKEDOWNS hash-only takedowns (`relist import` of a PDQ hex list)
# and RELIST_H2LOAD_PHOTOS photo takedowns (500x375 JPEGs drawn by this script with Pillow,
# registered with `relist takedown add`). The requests are built by hand from
# proto/relist/v1/relist.proto (a gRPC frame: 1 byte uncompressed flag, u32 BE length, then
# the protobuf of CheckListingRequest):
#   1. hash-only, CLEAR: a listing with a title, one PDQ and one pHash matching nothing (most
#      uploads); `-c 8 -m 32`;
#   2. hash-only, REUPLOAD: the same with one of the takedowns' PDQ, 6 bits flipped, so it
#      matches and every check writes a match record to the history; `-c 8 -m 32`;
#   3. one JPEG, CLEAR: a photo drawn like the others but never registered; `-c 8 -m 4`;
#   4. one JPEG, REUPLOAD: a re-encoded copy (quality 80) of a registered photo (recorded,
#      with its thumbnail); `-c 8 -m 4`.
# h2load counts HTTP 200s; gRPC errors travel in trailers, so each body is first sent once
# with curl (HTTP/2, prior knowledge) and its grpc-status trailer printed: it must be 0.
# Installs nghttp2-client with apt-get when h2load is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

takedowns=${RELIST_H2LOAD_TAKEDOWNS:-50000}
photos=${RELIST_H2LOAD_PHOTOS:-300}
n_hash=${RELIST_H2LOAD_N:-200000}
n_jpeg=${RELIST_H2LOAD_JPEG_N:-3000}

if ! command -v h2load >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq nghttp2-client >/dev/null
fi
python3 -c 'import PIL' 2>/dev/null || python3 -m pip install -q pillow

cargo build --release --bin relist
bin=$PWD/target/release/relist
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/ \+/ /g'), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# Takedown hashes, photos and the two request bodies.
python3 - "$work" "$takedowns" "$photos" <<'EOF'
import io, os, random, struct, sys
from PIL import Image, ImageDraw

work, takedowns, photos = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(18)
pdqs = ["%064x" % rng.getrandbits(256) for _ in range(takedowns)]
with open(os.path.join(work, "hashes.hex"), "w") as f:
    f.write("\n".join(pdqs) + "\n")

def photo(seed):
    r = random.Random(seed)
    img = Image.new("RGB", (500, 375))
    d = ImageDraw.Draw(img)
    top, bottom = [r.randrange(256) for _ in range(3)], [r.randrange(256) for _ in range(3)]
    for y in range(375):
        c = tuple(int(top[k] + (bottom[k] - top[k]) * y / 374) for k in range(3))
        d.line([(0, y), (499, y)], fill=c)
    for _ in range(25):
        x0, y0 = r.randrange(450), r.randrange(330)
        box = [x0, y0, x0 + r.randrange(20, 200), y0 + r.randrange(20, 150)]
        fill = tuple(r.randrange(256) for _ in range(3))
        (d.ellipse if r.random() < 0.5 else d.rectangle)(box, fill=fill, outline=(0, 0, 0))
    return img

def jpeg(img, quality):
    b = io.BytesIO()
    img.save(b, "JPEG", quality=quality)
    return b.getvalue()

os.makedirs(os.path.join(work, "photos"))
for i in range(photos):
    with open(os.path.join(work, "photos", "%d.jpg" % i), "wb") as f:
        f.write(jpeg(photo(i), 90))

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def field(num, payload):
    # Length-delimited (wire type 2): strings, bytes and messages.
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | 2) + varint(len(payload)) + payload

def grpc_frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg

def check_request(listing_id, title, image):
    # Listing: listing_id 1, marketplace 2, seller_id 3, title 4, images 6.
    listing = field(1, listing_id) + field(2, "tokopedia") + field(3, "seller-7") + field(4, title)
    listing += field(6, image)
    return field(1, listing)  # CheckListingRequest.listing = 1

def write(name, body):
    with open(os.path.join(work, name), "wb") as f:
        f.write(body)

# A near copy of takedown 17's PDQ (6 bits flipped), a PDQ matching nothing, and some pHash.
near = int(pdqs[17], 16)
for b in (3, 40, 77, 130, 201, 250):
    near ^= 1 << b
near_hex, clear_hex = "%064x" % near, "%064x" % rng.getrandbits(256)
phash_hex = "%016x" % rng.getrandbits(64)
title = "Kaos polos katun combed 30s hitam"
for name, pdq in (("hash-reupload", near_hex), ("hash-clear", clear_hex)):
    image = field(2, pdq) + field(3, phash_hex)  # Image: pdq 2, phash 3
    write(name + ".bin", grpc_frame(check_request("h2load-" + name, title, image)))
copy = jpeg(photo(7), 80)
write("jpeg-reupload.bin", grpc_frame(check_request("h2load-jpeg", "Sepatu lari pria", field(1, copy))))
write("jpeg-clear.bin", grpc_frame(check_request("h2load-jpeg-clear", "Sepatu lari pria", field(1, jpeg(photo(100_000), 80)))))
EOF

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
RELIST_LOG=warn "$bin" serve --data-dir "$work/data" --listen "$addr" &
pid=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.2
done

t0=$(date +%s.%N)
"$bin" import "$work/hashes.hex" --marketplace tokopedia --addr "$addr" >/dev/null
for ((i = 0; i < photos; i++)); do
    "$bin" takedown add --marketplace shopee --listing-id "p$i" --image "$work/photos/$i.jpg" --addr "$addr" >/dev/null
done
echo "registered $takedowns hash-only and $photos photo takedowns in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") s"

url=http://$addr/relist.v1.Relist/CheckListing
grpc_headers=(-H 'content-type: application/grpc' -H 'te: trailers')
for body in hash-clear hash-reupload jpeg-clear jpeg-reupload; do
    # The answer's verdict is field 1 of CheckListingResponse: bytes 5-6 of the frame are
    # 0x08 and the enum (1 CLEAR, 2 REVIEW, 3 REUPLOAD).
    status=$(curl -s --http2-prior-knowledge "${grpc_headers[@]}" --data-binary "@$work/$body.bin" \
        -D "$work/headers" -o "$work/answer" "$url" && grep -i '^grpc-status' "$work/headers" | tr -d '\r')
    verdict=$(od -An -tu1 -j6 -N1 "$work/answer" | tr -d ' ')
    echo "sanity: $body body -> ${status:-no grpc-status}, verdict enum ${verdict:-none}"
    case "$status" in *": 0") ;; *) echo "the $body body is not answered with a verdict" >&2; exit 1 ;; esac
done
run() {
    # $1: label; then h2load's arguments. Prints req/s and h2load's summary lines, then the
    # latency percentiles from its per-request log (third column: microseconds).
    local label=$1 log=$work/lat.log
    shift
    rm -f "$log"
    echo "h2load, $label ($*):"
    h2load "$@" -t 1 "${grpc_headers[@]}" --log-file "$log" "$url" |
        grep -E '^finished in|^requests:|^status codes:|time for request:' | sed 's/^/    /'
    sort -n -k3 "$log" | awk '{ t[NR] = $3 } END { printf "    latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (%d requests)\n", t[int(NR * 0.5)] / 1000, t[int(NR * 0.9)] / 1000, t[int(NR * 0.99)] / 1000, t[NR] / 1000, NR }'
}
echo
run "hash-only CheckListing, CLEAR" -n "$n_hash" -c 8 -m 32 -d "$work/hash-clear.bin"
run "hash-only CheckListing, REUPLOAD (recorded)" -n "$n_hash" -c 8 -m 32 -d "$work/hash-reupload.bin"
run "one-JPEG CheckListing, CLEAR" -n "$n_jpeg" -c 8 -m 4 -d "$work/jpeg-clear.bin"
run "one-JPEG CheckListing, REUPLOAD (recorded)" -n "$n_jpeg" -c 8 -m 4 -d "$work/jpeg-reupload.bin"

kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
echo
echo "cargo bench --bench grpc_load (same run):"
cargo bench --bench grpc_load
