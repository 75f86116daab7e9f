"""First launch on an empty models folder: a demo model is made and trains live (slow)."""

from __future__ import annotations

import pytest

from .conftest import frames_until


@pytest.mark.slow
def test_first_launch_trains_a_demo_model(tmp_path):
    from app.studio import Studio

    s = Studio((1600, 900), tmp_path / "models", demo=True)
    try:
        frames_until(s, lambda: s.st.trainer_name == "demo", timeout=120)
        frames_until(s, lambda: s.st.snapshot is not None and s.st.snapshot.step >= 2, timeout=120)
        assert s.st.current == "demo" and s.st.info("demo").queue_tokens > 10_000
        assert s.tab_name == "training" and s.banner is None
    finally:
        s.close()
