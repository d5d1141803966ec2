"""Render: the two charts of the grading report, drawn with Pillow: a histogram of the scores and a bar
per test. matplotlib would draw the same, but importing it costs a batch about 0.4 s of CPU
(more than the rest of the report); Pillow is already there (matplotlib depends on it).

    histogram_png([55.0, 80.0, 100.0], title="ps_convolution: grades", xlabel="score (%)", ylabel="students")
    bars_png({"test_corr1d": 0.25, "test_conv2d": 0.5}, title="ps_convolution: tests", xlabel="fraction failing")

Both return the bytes of a PNG image of SIZE pixels.
"""
import io
import math

from PIL import Image, ImageDraw, ImageFont

SIZE = (640, 400)
BLUE, RED, INK, GRID = (31, 119, 180), (214, 39, 40), (40, 40, 40), (225, 225, 225)


def histogram_counts(values, bins: int = 10, lo: float = 0.0, hi: float = 100.0) -> list[int]:
    """How many values fall in each of `bins` equal bins over [lo, hi] (the last bin includes hi,
    values outside are left out), as numpy.histogram counts them."""
    counts = [0] * bins
    for v in values:
        if lo <= v <= hi:
            counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    return counts


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top` (about `count` of them)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)
                if m * 10 ** math.floor(math.log10(raw)) >= raw))
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


class _Chart:
    """A white canvas with a title, a plot area and axis labels; `x`/`y` map data to pixels."""

    def __init__(self, title: str, xlabel: str, ylabel: str, left: int):
        self.image = Image.new("RGB", SIZE, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.big = ImageFont.load_default(size=13), ImageFont.load_default(size=16)
        self.left, self.right, self.top, self.bottom = left, SIZE[0] - 24, 44, SIZE[1] - 58
        self._centred(title, SIZE[0] / 2, 14, self.big)
        self._centred(xlabel, (self.left + self.right) / 2, SIZE[1] - 26, self.font)
        if ylabel:
            rotated = Image.new("RGBA", (int(self.font.getlength(ylabel)) + 4, 18), (255, 255, 255, 0))
            ImageDraw.Draw(rotated).text((2, 0), ylabel, fill=INK, font=self.font)
            rotated = rotated.rotate(90, expand=True)
            self.image.paste(rotated, (8, int((self.top + self.bottom - rotated.height) / 2)), rotated)

    def _centred(self, text: str, x: float, y: float, font) -> None:
        self.draw.text((x - font.getlength(text) / 2, y), text, fill=INK, font=font)

    def axes(self, xs: list[float], ys: list[float], xmax: float, ymax: float) -> None:
        """Grid lines and tick labels at xs (horizontal axis, 0..xmax) and ys (vertical, 0..ymax)."""
        self.xmax, self.ymax = xmax, ymax
        for x in xs:
            self.draw.line([(self.x(x), self.top), (self.x(x), self.bottom)], fill=GRID)
            self._centred(_label(x), self.x(x), self.bottom + 6, self.font)
        for y in ys:
            self.draw.line([(self.left, self.y(y)), (self.right, self.y(y))], fill=GRID)
            text = _label(y)
            self.draw.text((self.left - 6 - self.font.getlength(text), self.y(y) - 8), text, fill=INK, font=self.font)

    def frame(self) -> None:
        self.draw.rectangle([self.left, self.top, self.right, self.bottom], outline=INK)

    def x(self, value: float) -> float:
        return self.left + (self.right - self.left) * value / self.xmax

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * value / self.ymax

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


def histogram_png(values, title: str, xlabel: str, ylabel: str, bins: int = 10, lo: float = 0.0,
                  hi: float = 100.0) -> bytes:
    """A histogram of `values` in `bins` bins over [lo, hi] (`histogram_counts`)."""
    counts = histogram_counts(values, bins, lo, hi)
    chart = _Chart(title, xlabel, ylabel, left=64)
    ys = [t for t in _ticks(max(counts) or 1) if t == int(t)]   # whole students
    chart.axes(_ticks(hi - lo), ys, hi - lo, ys[-1])
    width = (hi - lo) / bins
    for i, n in enumerate(counts):
        if n:
            chart.draw.rectangle([chart.x(i * width), chart.y(n), chart.x((i + 1) * width), chart.y(0)],
                                 fill=BLUE, outline="white")
    chart.frame()
    return chart.png()


def bars_png(fractions: dict, title: str, xlabel: str) -> bytes:
    """One horizontal bar per key of `fractions` (a value in [0, 1]), the first at the bottom."""
    font = ImageFont.load_default(size=13)
    chart = _Chart(title, xlabel, "", left=int(max([font.getlength(k) for k in fractions] + [20])) + 16)
    chart.axes([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [], 1.0, max(len(fractions), 1))
    for i, (name, value) in enumerate(fractions.items()):
        top, bottom = chart.y(i + 0.9), chart.y(i + 0.1)
        if value > 0:
            chart.draw.rectangle([chart.x(0), top, chart.x(min(value, 1.0)), bottom], fill=RED)
        chart.draw.text((chart.left - 8 - font.getlength(name), (top + bottom) / 2 - 8), name, fill=INK, font=font)
    chart.frame()
    return chart.png()
