"""The progress display: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from framefarm.progress import ProgressDisplay


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_redraws_in_place_with_rate_and_eta() -> None:
    stream = FakeTerminal()
    display = ProgressDisplay(100, stream=stream, tty_interval=0)
    display.update(25)
    display.update(100)
    display.finish()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[#######---------------------] 25/100 frames" in text
    assert "[############################] 100/100 frames" in text
    assert "ETA 0:00" in text


def test_log_lines_when_not_a_terminal_are_throttled() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(10, stream=stream, log_interval=3600)
    for done in range(1, 11):
        display.update(done)
    display.finish()
    lines = stream.getvalue().splitlines()
    # One line at the start of the interval, one at the end: never a line per frame.
    assert len(lines) == 2
    assert lines[0].startswith("framefarm: 1/10 frames")
    assert lines[-1].startswith("framefarm: 10/10 frames") and lines[-1].endswith("(100%)")
    assert "\r" not in stream.getvalue()


def test_line_estimates_time_left() -> None:
    display = ProgressDisplay(300, stream=io.StringIO(), tty=False)
    assert "ETA 0:20" in display.line(100, 10.0)  # 10 fps, 200 frames left
    assert "10.0 fps" in display.line(100, 10.0)
    assert "ETA ?:??" in display.line(0, 1.0)
    assert "ETA 1:00:00" in ProgressDisplay(3601, stream=io.StringIO(), tty=False).line(1, 1.0)


def test_a_log_line_reads_cleanly_before_any_frame_is_done() -> None:
    display = ProgressDisplay(240, stream=io.StringIO(), tty=False)
    assert display.line(0, 0.0) == "framefarm: 0/240 frames, 0.0 fps, ETA ?:?? (0%)"
    assert display.line(120, 4.0) == "framefarm: 120/240 frames, 30.0 fps, ETA 0:04 (50%)"
