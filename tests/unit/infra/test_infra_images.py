"""Every image docker-compose.yml and infra/k8s pull: still published, pinned, and on record.

MinIO's community images left Docker Hub (`minio/minio`, `minio/mc`), so a file naming them no
longer starts on a fresh machine. Third-party images are pinned by tag (for the reader) and
digest (what is pulled), one digest per tag everywhere, and each reference is listed in the
README's "Images" paragraph with where its digest comes from. driftloop's own image is built
from infra/Dockerfile, not pulled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from infra_support import COMPOSE, K8S, ROOT, load_yaml, render

pytestmark = pytest.mark.unit

OWN_IMAGE = re.compile(r"driftloop:\d+\.\d+\.\d+")
PINNED = re.compile(
    r"(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*):(?P<tag>\w[\w.-]{0,127})@sha256:[0-9a-f]{64}"
)
WITHDRAWN = re.compile(r"(^|/)minio/")
"""minio/minio and minio/mc left Docker Hub; quay.io's frozen copies get no security fixes."""
OVERLAYS = ["base", "overlays/in-cluster", "overlays/external"]


def k8s_images() -> Iterator[tuple[str, str]]:
    for overlay in OVERLAYS:
        for doc in render(K8S / overlay):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for box in pod.get("containers", []) + pod.get("initContainers", []):
                yield f"{overlay}: {doc['kind']}/{doc['metadata']['name']}", box["image"]


def compose_images() -> Iterator[tuple[str, str]]:
    for name, service in load_yaml(COMPOSE)["services"].items():
        yield f"compose: {name}", service["image"]


def every_image() -> list[tuple[str, str]]:
    return [*compose_images(), *k8s_images()]


def third_party(images: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(where, image) for where, image in images if not OWN_IMAGE.fullmatch(image)]


def test_no_withdrawn_minio_image_is_referenced() -> None:
    images = every_image()
    assert any(where.startswith("overlays/in-cluster") for where, _ in images)
    assert not [(w, i) for w, i in images if WITHDRAWN.search(i)]
    for path in [COMPOSE, *K8S.rglob("*.yaml")]:
        assert not WITHDRAWN.search(path.read_text()), path


def test_the_withdrawn_check_can_fail() -> None:
    for gone in ("minio/minio:RELEASE.2025-09-07T16-13-09Z", "quay.io/minio/mc:latest"):
        assert WITHDRAWN.search(gone)
    assert not WITHDRAWN.search("chrislusf/seaweedfs:4.48")


def test_third_party_images_are_pinned_by_tag_and_digest() -> None:
    found = third_party(every_image())
    assert {i.split(":")[0] for _, i in found} >= {
        "apache/kafka",
        "chrislusf/seaweedfs",
        "prom/prometheus",
        "grafana/grafana",
    }
    unpinned = [(w, i) for w, i in found if not PINNED.fullmatch(i)]
    assert not unpinned, f"pin these by tag and @sha256: digest: {unpinned}"
    assert not [(w, i) for w, i in found if ":latest@" in i]


def test_the_pin_check_can_fail() -> None:
    for loose in ("apache/kafka:4.1.1", "apache/kafka@sha256:" + "0" * 64, "x:1@sha256:abc"):
        assert not PINNED.fullmatch(loose)


def test_one_digest_per_tag_across_compose_and_kubernetes() -> None:
    digests: dict[str, set[str]] = {}
    for _, image in third_party(every_image()):
        tagged, digest = image.split("@")
        digests.setdefault(tagged, set()).add(digest)
    assert {tag: ds for tag, ds in digests.items() if len(ds) > 1} == {}


def test_every_pinned_image_is_on_record_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("#### Images")
    section = readme[start : readme.index("\n#", start + 1)]
    missing = {i for _, i in third_party(every_image()) if f"`{i}`" not in section}
    assert not missing, f"README's Images paragraph does not list: {missing}"


def test_the_services_own_image_is_built_not_pulled() -> None:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    for name, service in services.items():
        if OWN_IMAGE.fullmatch(service["image"]):
            assert service["build"]["dockerfile"] == "infra/Dockerfile", name
