"""Paper sources. arXiv and the Hub cannot be reached in CI, so each is tested against a
local HTTP server on 127.0.0.1 serving their real wire formats: an Atom feed (both the older
per-element namespace form and the newer root-declared form) and the Hub's paper endpoints
(``/api/papers/search``, ``/api/daily_papers``, ``/api/papers/{id}``) as huggingface_hub
reads them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from autolab.papers.arxiv import ArxivSource, build_query, parse_atom
from autolab.papers.base import MinedPapers, PaperSourceError
from autolab.papers.hf_papers import HFPapersSource
from autolab.papers.local import LocalSource
from autolab.papers.ratelimit import RateLimiter
from autolab_core.testing import make_context

OLD_FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query?search_query%3Dall%3Awarmup" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query: search_query=all:warmup&amp;id_list=&amp;start=0&amp;max_results=2</title>
  <id>http://arxiv.org/api/Qk2mB5kL9Wq</id>
  <updated>2024-05-01T00:00:00-04:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">2</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">0</opensearch:startIndex>
  <entry>
    <id>http://arxiv.org/abs/2310.07831v2</id>
    <updated>2023-10-20T17:59:59Z</updated>
    <published>2023-10-11T17:59:59Z</published>
    <title>When, Why and How Much? Adaptive Learning Rate
      Scheduling by Refinement</title>
    <summary>  Learning rate schedules used in practice bear little resemblance
to those recommended by theory. We close much of this gap.
</summary>
    <author><name>Aaron Defazio</name></author>
    <author><name>Ashok Cutkosky</name></author>
    <arxiv:comment xmlns:arxiv="http://arxiv.org/schemas/atom">20 pages</arxiv:comment>
    <link href="http://arxiv.org/abs/2310.07831v2" rel="alternate" type="text/html"/>
    <link title="pdf" href="http://arxiv.org/pdf/2310.07831v2" rel="related" type="application/pdf"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
    <category term="math.OC" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
  </entry>
  <entry>
    <id>http://arxiv.org/abs/hep-ex/0307015v1</id>
    <updated>2003-07-07T13:46:39-04:00</updated>
    <published>2003-07-07T13:46:39-04:00</published>
    <title>Multi-Electron Production at High Transverse Momenta</title>
    <summary>Data from electron-proton collisions.</summary>
    <author><name>H1 Collaboration</name></author>
    <link href="http://arxiv.org/abs/hep-ex/0307015v1" rel="alternate" type="text/html"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="hep-ex" scheme="http://arxiv.org/schemas/atom"/>
    <category term="hep-ex" scheme="http://arxiv.org/schemas/atom"/>
  </entry>
</feed>
"""

NEW_FEED = """<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">
  <id>https://arxiv.org/api/2yOfuHwGZcJBcA6d5ypHaswkJwk</id>
  <title>arXiv Query: search_query=all:warmup&amp;id_list=&amp;start=0&amp;max_results=1</title>
  <updated>2025-12-02T12:00:00Z</updated>
  <link href="https://arxiv.org/api/query?search_query=all:warmup&amp;start=0&amp;max_results=1"
        type="application/atom+xml"/>
  <opensearch:itemsPerPage>1</opensearch:itemsPerPage>
  <opensearch:totalResults>118</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>
  <entry>
    <id>https://arxiv.org/abs/2511.04567v1</id>
    <title>Why Warmup the Learning Rate? Underlying Mechanisms and Improvements</title>
    <updated>2025-11-06T18:00:00Z</updated>
    <link href="https://arxiv.org/abs/2511.04567v1" rel="alternate" type="text/html"/>
    <link href="https://arxiv.org/pdf/2511.04567v1" rel="related" type="application/pdf" title="pdf"/>
    <summary>It is common in deep learning to warm up the learning rate.</summary>
    <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
    <category term="stat.ML" scheme="http://arxiv.org/schemas/atom"/>
    <published>2025-11-06T18:00:00Z</published>
    <arxiv:comment>Accepted at a workshop</arxiv:comment>
    <arxiv:primary_category term="stat.ML"/>
    <author><name>Dayal Singh Kalra</name><arxiv:affiliation>UMD</arxiv:affiliation></author>
    <author><name>Maissam Barkeshli</name></author>
  </entry>
</feed>
"""

ERROR_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><entry>
<id>http://arxiv.org/api/errors#incorrect_id_format_for_1234.12345</id><title>Error</title>
<summary>incorrect id format for 1234.12345</summary></entry></feed>"""


class Routes:
    """A tiny HTTP server on 127.0.0.1 answering GETs from ``handler(path, query)``."""

    def __init__(self, handler):
        self.requests = []
        self.times = []
        routes = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                routes.requests.append((url.path, query))
                routes.times.append(time.monotonic())
                status, ctype, body = handler(url.path, query)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_parse_atom_old_and_new_forms():
    old = parse_atom(OLD_FEED)
    assert [p.id for p in old] == ["2310.07831", "hep-ex/0307015"]
    first = old[0]
    assert first.title == "When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement"
    assert first.summary.startswith("Learning rate schedules used in practice bear little")
    assert first.authors == ("Aaron Defazio", "Ashok Cutkosky")
    assert first.published == "2023-10-11" and first.keywords == ("cs.LG", "math.OC")
    assert first.url == "http://arxiv.org/abs/2310.07831v2" and first.source == "arxiv"
    (new,) = parse_atom(NEW_FEED)
    assert new.id == "2511.04567" and new.keywords == ("stat.ML", "cs.LG")
    assert new.authors == ("Dayal Singh Kalra", "Maissam Barkeshli")
    assert new.published == "2025-11-06" and new.url.startswith("https://arxiv.org/abs/")
    with pytest.raises(PaperSourceError, match="incorrect id format"):
        parse_atom(ERROR_FEED)
    with pytest.raises(PaperSourceError, match="does not parse"):
        parse_atom("<feed><entry>")


def test_build_query():
    assert build_query("learning rate warmup", ["cs.LG", "stat.ML"], "2025-01-31") == (
        "all:learning AND all:rate AND all:warmup AND (cat:cs.LG OR cat:stat.ML) AND "
        "submittedDate:[202501310000 TO 299912312359]"
    )
    assert build_query('ti:"weight decay"', [], None) == '(ti:"weight decay")'
    assert build_query("", [], "2025-02-01") == "cat:cs.LG AND submittedDate:[202502010000 TO 299912312359]"


def test_rate_limiter_spaces_requests():
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(3.0, clock=lambda: now[0], sleep=sleep)
    limiter.wait()
    now[0] += 1.0
    limiter.wait()
    limiter.wait()
    now[0] += 10
    limiter.wait()
    assert slept == [2.0, 3.0]


def test_arxiv_source_against_local_server(tmp_path):
    feeds = {"n": 0}

    def handler(path, query):
        feeds["n"] += 1
        if feeds["n"] == 1:
            return 503, "text/plain", "busy"
        if "id_list" in query:
            return 200, "application/atom+xml", NEW_FEED
        return 200, "application/atom+xml", OLD_FEED

    server = Routes(handler)
    try:
        src = ArxivSource({"base_url": server.url + "/api/query", "interval_s": 0.2,
                           "categories": ["cs.LG"]}, make_context(tmp_path))
        found = src.search("learning rate", limit=5, since="2020-01-01")
        assert [p.id for p in found] == ["2310.07831"]  # the 2003 paper is before `since`
        path, query = server.requests[-1]
        assert path == "/api/query" and query["sortBy"] == "submittedDate"
        assert "cat:cs.LG" in query["search_query"] and query["max_results"] == "5"
        assert src.get("2511.04567v1").title.startswith("Why Warmup")
        assert server.requests[-1][1]["id_list"] == "2511.04567"
        gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
        assert len(gaps) == 2 and min(gaps) >= 0.18  # 503 retry, search, get: all spaced
    finally:
        server.close()


SEARCH_ITEM = {
    "paper": {
        "id": "2502.05171", "title": "Scaling Test-Time Compute",
        "authors": [{"_id": "a1", "name": "Jonas Geiping", "hidden": False}],
        "publishedAt": "2025-02-07T18:55:02.000Z", "upvotes": 120, "discussionId": "d1",
    },
    "publishedAt": "2025-02-10T02:00:00.000Z", "title": "Scaling Test-Time Compute",
    "numComments": 3, "isAuthorParticipating": False,
}
INFO = {
    "id": "2502.05171", "title": "Scaling Test-Time Compute",
    "authors": [{"_id": "a1", "name": "Jonas Geiping", "hidden": False}],
    "publishedAt": "2025-02-07T18:55:02.000Z", "upvotes": 120, "discussionId": "d1",
    "summary": "We study a novel language model architecture that scales test-time computation.",
    "ai_summary": "A recurrent-depth model.", "ai_keywords": ["recurrent depth", "latent reasoning"],
}


def test_hf_papers_against_local_hub(tmp_path):
    def handler(path, query):
        if path == "/api/papers/search":
            return 200, "application/json", [SEARCH_ITEM]
        if path == "/api/daily_papers":
            return 200, "application/json", [{**SEARCH_ITEM, "paper": dict(SEARCH_ITEM["paper"])}]
        if path == "/api/papers/2502.05171":
            return 200, "application/json", INFO
        return 404, "application/json", {"error": "Paper not found"}

    hub = Routes(handler)
    try:
        src = HFPapersSource({"endpoint": hub.url, "token_env": None}, make_context(tmp_path))
        (paper,) = src.search("test-time compute", limit=3)
        assert paper.summary.startswith("We study a novel")  # completed through paper_info
        assert paper.keywords == ("recurrent depth", "latent reasoning")
        assert paper.published == "2025-02-07" and paper.authors == ("Jonas Geiping",)
        assert paper.url == "https://huggingface.co/papers/2502.05171"
        assert ("/api/papers/search", {"q": "test-time compute", "limit": "3"}) in hub.requests
        assert src.search("", limit=2)[0].id == "2502.05171"
        assert hub.requests[-2][0] == "/api/daily_papers"
        assert src.get("9999.99999") is None
    finally:
        hub.close()


def test_local_source_markdown_bibtex_json(tmp_path):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "warmup.md").write_text(
        "---\ntitle: Linear warmup helps Adam\ndate: 2024-03-01\nurl: https://example.org/w\n"
        "keywords: warmup, adam\n---\nWarm up the learning rate for 5% of steps.\n"
    )
    (notes / "sub" / "norm.md").write_text("# RMSNorm instead of LayerNorm\n\nCheaper and as good.\n")
    (notes / "refs.bib").write_text(
        "@comment{ignore me}\n"
        "@article{loshchilov2019adamw,\n  title = {Decoupled Weight Decay {Regularization}},\n"
        "  author = {Loshchilov, Ilya and Hutter, Frank},\n  year = 2019,\n"
        "  eprint = {1711.05101},\n  abstract = \"Weight decay is not L2 regularization for Adam.\"\n}\n"
    )
    (notes / "ideas.json").write_text(json.dumps([
        {"title": "Label smoothing", "summary": "Smooth targets by 0.1.", "date": "2023-01-01"},
        {"no": "title"},
    ]))
    src = LocalSource({"path": "notes"}, make_context(tmp_path))
    assert src.check() is None
    every = {p.id: p for p in src.search("", limit=10)}
    assert set(every) == {"warmup", "sub/norm", "loshchilov2019adamw", "ideas-0"}
    assert every["sub/norm"].title == "RMSNorm instead of LayerNorm"
    assert every["sub/norm"].summary == "Cheaper and as good."
    assert every["warmup"].keywords == ("warmup", "adam") and every["warmup"].published == "2024-03-01"
    bib = every["loshchilov2019adamw"]
    assert bib.title == "Decoupled Weight Decay Regularization"
    assert bib.authors == ("Loshchilov, Ilya", "Hutter, Frank")
    assert bib.url == "https://arxiv.org/abs/1711.05101" and bib.published == "2019"
    assert src.search("weight decay adam", limit=2)[0].id == "loshchilov2019adamw"
    assert [p.id for p in src.search("warmup", since="2024-01-01")] == ["warmup"]
    assert src.get("ideas-0").title == "Label smoothing"
    missing = LocalSource({"path": "nope"}, make_context(tmp_path))
    assert "is not a folder" in missing.check()
    with pytest.raises(PaperSourceError, match=r"set \[papers\.local\] path"):
        missing.search("x")


def test_mined_papers_are_remembered(tmp_path):
    mined = MinedPapers(tmp_path)
    assert "2310.07831" not in mined
    mined.mark("2310.07831", "refined LR schedule")
    again = MinedPapers(tmp_path)
    assert "2310.07831" in again and again.ideas("2310.07831") == ["refined LR schedule"]
