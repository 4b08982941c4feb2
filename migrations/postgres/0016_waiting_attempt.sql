-- A waiting run now keeps the number of the attempt it waits in (before, the wait lowered it
-- by one, and the claim after the resume raised it again). The runs waiting when this is
-- applied were lowered the old way: raise them, so the resume (which now does the lowering)
-- leaves them where they were.
UPDATE runs SET attempt = attempt + 1 WHERE status = 'waiting';
