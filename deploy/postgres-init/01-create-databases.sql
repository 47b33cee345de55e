-- One database per service. The postgres image runs this file only when it
-- initialises an empty data volume.
CREATE DATABASE catalog;
CREATE DATABASE collections;
CREATE DATABASE sharing;
