using Bunit;
using RlhfStudio.Web.Components.Charts;

namespace RlhfStudio.Web.Tests.Components;

public class ChartTests : BunitContext
{
    [Fact]
    public void Smoothing_is_debiased_so_the_curve_starts_at_the_first_value()
    {
        var points = new List<(double, double)> { (0, 10), (1, 0), (2, 0) };
        var smooth = ChartMath.Smooth(points, 0.5);
        Assert.Equal(10, smooth[0].Y, 9);
        // second: (0.5*0.5*10 + 0.5*0) / (1 - 0.25) = 2.5 / 0.75
        Assert.Equal(2.5 / 0.75, smooth[1].Y, 9);
        Assert.Equal(points, ChartMath.Smooth(points, 0));
    }

    [Theory]
    [InlineData(0, 100, 5, new double[] { 0, 20, 40, 60, 80, 100 })]
    [InlineData(0.13, 0.87, 4, new double[] { 0.2, 0.4, 0.6, 0.8 })]
    [InlineData(-3, 3, 3, new double[] { -2, 0, 2 })]
    public void Ticks_are_multiples_of_1_2_or_5_inside_the_range(double min, double max, int count, double[] expected)
    {
        var ticks = ChartMath.Ticks(min, max, count);
        Assert.Equal(expected.Length, ticks.Count);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], ticks[i], 9);
    }

    [Theory]
    [InlineData(0.105584232754575, 0.10558423275457501)]       // one ulp apart: the step is far below the values' resolution
    [InlineData(1795433780674.0, 1795433780674.0002)]            // a millisecond timestamp and a sub-ulp spread
    [InlineData(1e-300, 3e-300)]
    [InlineData(-1e308, 1e308)]                                  // the span overflows
    public void Ticks_stay_few_and_finite_for_ranges_at_the_edge_of_double_precision(double min, double max)
    {
        var ticks = ChartMath.Ticks(min, max, 5);
        Assert.InRange(ticks.Count, 0, 22);
        Assert.All(ticks, t => Assert.True(double.IsFinite(t)));
        Assert.Equal(ticks.Distinct().Order(), ticks);
    }

    [Fact]
    public void Ticks_of_a_flat_or_invalid_range()
    {
        Assert.Equal([3.0], ChartMath.Ticks(3, 3));
        Assert.Empty(ChartMath.Ticks(double.NaN, 1));
        Assert.Empty(ChartMath.Ticks(0, double.PositiveInfinity));
    }

    [Fact]
    public void A_spread_within_rounding_is_drawn_as_a_flat_series()
    {
        // Two evaluations of the same accuracy that differ in the last bit: the padded range must be as wide as a
        // flat series' (it used to be ~1e-18 wide, and the axis ticks then looped forever on the writer's thread).
        double a = 0.105584232754575, b = Math.BitIncrement(a);
        Assert.Equal(ChartMath.Range([a, a]), ChartMath.Range([a, b]));
        var (lo, hi) = ChartMath.Range([a, b]);
        Assert.InRange(ChartMath.Ticks(lo, hi, 5).Count, 3, 12);
    }

    [Fact]
    public void Range_pads_by_five_percent_and_widens_a_flat_series()
    {
        Assert.Equal((-0.5, 10.5), ChartMath.Range([0, 10, double.NaN]));
        var (lo, hi) = ChartMath.Range([2, 2]);
        Assert.True(lo < 2 && hi > 2);
    }

    [Fact]
    public void Tick_labels_get_the_decimals_a_narrow_range_needs()
    {
        Assert.Equal(["0", "20", "40"], ChartMath.TickLabels([0, 20, 40]));
        Assert.Equal(["6.020", "6.021", "6.022"], ChartMath.TickLabels([6.020, 6.021, 6.022]));
        Assert.Equal(["5e-4", "6e-4"], ChartMath.TickLabels([5e-4, 6e-4]));
    }

    [Fact]
    public void Histogram_bins_have_nice_edges_and_count_every_value()
    {
        var values = new List<double> { 3, 7, 12, 19, 20, 41 };
        var bins = Histogram.Bins(values, 4);
        Assert.Equal(values.Count, bins.Sum(b => b.Count));
        Assert.Equal(0, bins[0].From);
        Assert.All(bins, b => Assert.Equal(10, b.To - b.From, 9)); // (41-3)/4 = 9.5 -> 10
        Assert.Equal(2, bins[1].Count); // 12 and 19; 20 falls in [20, 30)
        Assert.All(Histogram.Bins([5, 5, 6], 20, minWidth: 1), b => Assert.True(b.To - b.From >= 1));
        Assert.Empty(Histogram.Bins([]));
        // Values far larger than the bin width: the first bin's start rounds above the smallest value (index -1 before).
        foreach (var (lo, hi) in new[] { (7.0534505866436605, 7.0534505866437645), (1510221238395.63, 1510221238395.7131) })
            Assert.Equal(2, Histogram.Bins([lo, hi], 20).Sum(b => b.Count));
    }

    [Fact]
    public void Line_chart_draws_axes_a_line_per_series_and_a_legend_with_last_values()
    {
        var cut = Render<LineChart>(p => p
            .Add(c => c.Title, "train/loss")
            .Add(c => c.Series, new[]
            {
                new ChartSeries("#1", "#3949ab", [(0, 2.0), (10, 1.0), (20, 0.5)]),
                new ChartSeries("#2", "#e53935", [(0, 2.5), (10, 1.5)]),
            })
            .Add(c => c.XLabel, "step"));
        Assert.Equal(2, cut.FindAll("path.line").Count);
        Assert.NotEmpty(cut.FindAll("text.tick"));
        Assert.Contains("step", cut.Find("text.axis-label").TextContent);
        var legend = cut.FindAll(".legend-item").Select(e => e.TextContent).ToList();
        Assert.Contains(legend, l => l.Contains("#1") && l.Contains("0.5"));
        Assert.Contains(legend, l => l.Contains("#2") && l.Contains("1.5"));
    }

    [Fact]
    public void A_point_without_neighbours_is_drawn_as_a_dot()
    {
        // Run #2 has evaluated once: its path alone ("M x,y") would draw nothing.
        var cut = Render<LineChart>(p => p
            .Add(c => c.Title, "eval/loss")
            .Add(c => c.Series, new[]
            {
                new ChartSeries("#1", "#3949ab", [(10, 3.6), (20, 3.4)]),
                new ChartSeries("#2", "#e53935", [(10, 5.4)]),
            }));
        var dot = Assert.Single(cut.FindAll("circle.dot"));
        Assert.Equal("#e53935", dot.GetAttribute("fill"));
        // Between gaps (a NaN step) too; points with a finite neighbour are on a line already.
        Assert.Equal([(1.0, 0.0), (3.0, 1.0)], ChartMath.Isolated([(1, 0), (2, double.NaN), (3, 1), (4, double.NaN), (5, 2), (6, 3)]));
    }

    [Fact]
    public void Line_chart_without_points_says_so()
    {
        var cut = Render<LineChart>(p => p.Add(c => c.Title, "eval/loss"));
        Assert.Contains("no points yet", cut.Markup);
        Assert.Empty(cut.FindAll("svg"));
    }

    [Fact]
    public void Bar_chart_draws_one_bar_per_bin_and_the_marker()
    {
        var cut = Render<BarChart>(p => p
            .Add(c => c.Bins, Histogram.Bins([10, 20, 30, 40, 45], 4, minWidth: 1))
            .Add(c => c.Marker, 32.0)
            .Add(c => c.MarkerLabel, "maxLength"));
        Assert.Equal(Histogram.Bins([10, 20, 30, 40, 45], 4, minWidth: 1).Count, cut.FindAll("rect.bar").Count);
        Assert.Single(cut.FindAll("line.marker"));
        Assert.Contains("maxLength", cut.Find(".line-chart-legend").TextContent);
    }
}
