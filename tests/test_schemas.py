from __future__ import annotations

import pytest
from acfd.schemas.artifact import ArtifactError, ArtifactMeta


def test_meta_roundtrip_and_default_threshold():
    meta = ArtifactMeta(config_hash="abc", preset="paper")
    back = ArtifactMeta.from_json(meta.to_json())
    assert back == meta
    assert back.threshold == pytest.approx((0.1 + 18.0) / 2)


@pytest.mark.parametrize(
    "payload",
    ["not json", "[1, 2]", '{"input_size": 299, "bogus": 1}', '{"threshold": 30.0}', '{"schema_version": 99}'],
)
def test_meta_rejects_bad_headers(payload):
    with pytest.raises(ArtifactError):
        ArtifactMeta.from_json(payload)
