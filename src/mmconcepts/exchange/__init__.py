"""Exchange with the sparse-autoencoder ecosystem: SAEs trained elsewhere read in as concepts folders
(SAELens, sparsify, dictionary_learning layouts), and concepts written out for SAELens and Neuronpedia."""
