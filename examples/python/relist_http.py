#!/usr/bin/env python3
"""A relist client over the JSON HTTP API, with the Python standard library only.

Registers a taken-down listing with its photo, checks a new listing's photo against the bank
and prints the verdict:

    python3 relist_http.py --url http://127.0.0.1:8080 --key rk_... \\
        --takedown-image taken_down.jpg --check-image new_upload.jpg

The key (or RELIST_API_KEY) is needed once the daemon has API keys: a writer or admin key
registers, a checker or admin key checks. Exit status, as `relist check` has it: 0 CLEAR,
3 REVIEW, 4 REUPLOAD, 1 when a request failed. The API is described by the daemon itself at
/api/v1/openapi.json; see docs/http-api.md.
"""
import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request

EXIT = {"CLEAR": 0, "REVIEW": 3, "REUPLOAD": 4}


class RelistError(Exception):
    """An error answer of the API: its HTTP status and {"error": {code, message, field}}."""

    def __init__(self, status, code, message, field=None):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field


class Relist:
    def __init__(self, url, key=None, timeout=60):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", "Bearer " + self.key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            try:
                err = json.load(e)["error"]
            except (ValueError, KeyError, TypeError):
                raise RelistError(e.code, "HTTP", e.reason) from None
            raise RelistError(e.code, err.get("code"), err.get("message"), err.get("field")) from None

    @staticmethod
    def image_file(path):
        """An image for a listing: the file's bytes as base64 (JPEG, PNG, WebP, GIF)."""
        with open(path, "rb") as f:
            return {"data": base64.b64encode(f.read()).decode("ascii")}

    def register(self, listing, reason=""):
        """POST /api/v1/takedowns: {takedown_id, updated, fingerprints}."""
        return self._call("POST", "/api/v1/takedowns", {"listing": listing, "reason": reason})

    def check(self, listing):
        """POST /api/v1/check: {verdict, score, matches, match_id, fingerprints}."""
        return self._call("POST", "/api/v1/check", {"listing": listing})

    def remove(self, takedown_id):
        """DELETE /api/v1/takedowns/{id}: {takedown_id, removed_at_ms}."""
        return self._call("DELETE", f"/api/v1/takedowns/{int(takedown_id)}")

    def matches(self, **filters):
        """GET /api/v1/matches: {records, next_page_token}."""
        from urllib.parse import urlencode

        q = urlencode({k: v for k, v in filters.items() if v is not None})
        return self._call("GET", "/api/v1/matches" + ("?" + q if q else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the daemon's web address, e.g. http://127.0.0.1:8080")
    p.add_argument("--key", default=os.environ.get("RELIST_API_KEY"), help="API key (default: $RELIST_API_KEY)")
    p.add_argument("--takedown-image", required=True, help="photo of the taken-down listing")
    p.add_argument("--check-image", required=True, help="photo of the new listing to check")
    p.add_argument("--marketplace", default="shopee", help="marketplace of both listings")
    p.add_argument("--takedown-id", default="td-1", help="listing id of the taken-down listing")
    p.add_argument("--listing-id", default="new-1", help="listing id of the new listing")
    p.add_argument("--title", default="", help="title of both listings")
    p.add_argument("--json", action="store_true", help="print the whole check answer as JSON")
    a = p.parse_args()

    try:
        takedown_image, check_image = Relist.image_file(a.takedown_image), Relist.image_file(a.check_image)
    except OSError as e:
        print(f"relist: cannot read an image: {e}", file=sys.stderr)
        return 1
    relist = Relist(a.url, a.key)
    try:
        reg = relist.register(
            {"marketplace": a.marketplace, "listing_id": a.takedown_id, "title": a.title,
             "images": [takedown_image]},
            reason="example takedown",
        )
        print(f"takedown {reg['takedown_id']} {'updated' if reg['updated'] else 'registered'}", file=sys.stderr)
        res = relist.check(
            {"marketplace": a.marketplace, "listing_id": a.listing_id, "title": a.title,
             "images": [check_image]}
        )
    except RelistError as e:
        where = f" (field {e.field})" if e.field else ""
        print(f"relist: {e}{where}", file=sys.stderr)
        return 1
    except (OSError, urllib.error.URLError) as e:
        print(f"relist: cannot reach {a.url}: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['verdict']} score {res['score']:.3f}")
        for m in res["matches"]:
            ev = ", ".join(f"{e['kind']} distance {e['distance']}" for e in m["images"])
            print(f"  {m['verdict']} takedown {m['takedown_id']}: {m['marketplace']}/{m['listing_id']} {ev}")
    return EXIT.get(res["verdict"], 1)


if __name__ == "__main__":
    sys.exit(main())
