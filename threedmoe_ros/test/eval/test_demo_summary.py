"""The demo says how far its few episodes can be trusted: the pooled rate with its interval, and each row's width."""

import json

from threedmoe_ros.demo import pooled_line


def test_demo_pools_every_episode_and_says_how_wide_a_row_is(tmp_path):
    path = tmp_path / "success.json"
    path.write_text(json.dumps({"episodes": [{"success": s} for s in (True, True, False, True, True, False)]}))
    line = pooled_line(path, episodes=2)
    assert "all 6 episodes: 0.67" in line
    assert "95% interval 0.30–0.90" in line  # Wilson, 4 of 6
    assert "each row has 2 episodes" in line and "0.81 wide" in line  # Wilson, 1 of 2: 0.09–0.91
