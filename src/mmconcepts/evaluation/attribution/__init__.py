"""Do the concepts' maps point at the object? The concept-map evaluation on ShapesWorld, whose objects have
known centres and sizes.

:mod:`~.map_scores` holds the pure scores of a map against an object (the pointing game, the energy inside)
and the baselines that know nothing of the image (centre, random patch, object mask), as rows
(:class:`~.map_scores.MapScores`); :mod:`~.heatmaps` runs ``evaluate --heatmaps`` as configured by
:class:`~.heatmaps.HeatmapSettings`: it maps each test image's top-1 concept with each map method and returns
the scores (:class:`~.heatmaps.HeatmapScores`, ``metrics.json``'s ``heatmaps``) and the report's maps
(:class:`~.heatmaps.ReportMaps`, ``maps.json``).
"""
