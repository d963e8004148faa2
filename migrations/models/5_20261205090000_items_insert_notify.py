from tortoise import BaseDBAsyncClient

# The change notification now covers inserts too, with the new row's id: a cached list page
# (app/items/cache.py) must not outlive a row added on another machine, or in SQL. Per row,
# like updates and deletes, so the payload is an id that every version of the listener
# understands. Hand-written: aerich does not generate triggers; the models are unchanged
# (MODELS_STATE as migration 4).
RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE OR REPLACE FUNCTION "items_notify_change"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('items_changed', '*');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('items_changed', NEW."id"::text);
    ELSE
        PERFORM pg_notify('items_changed', OLD."id"::text);
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER "items_notify_change" AFTER INSERT OR UPDATE OR DELETE ON "items"
    FOR EACH ROW EXECUTE FUNCTION "items_notify_change"();"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    # Migration 4's trigger: updates and deletes only (the function's INSERT branch is then
    # never taken).
    return """
        CREATE OR REPLACE TRIGGER "items_notify_change" AFTER UPDATE OR DELETE ON "items"
    FOR EACH ROW EXECUTE FUNCTION "items_notify_change"();"""


MODELS_STATE = (
    "eJztnFtT2zgUgP+Kxi+lM5SBQIDdPjmQttlC0oGwu72NEbaSaGJLriQXMl3++0qyHd9NQi"
    "FN0jwRSzqS/B3pSOdI5ofhUQe5fKfjIM+nAhF78h5NjD/BD4NAD8kfFSW2gQF9P8lXCQLe"
    "uFoEJ2WtMZroTHjDBYO2kPkD6HIkkxzEbYZ9gSlRUj2CgA1dF7EXHAQcAToAVKZdp5p+Jd"
    "u+fg2uuYAi4NcAc0AC1wUBEdgFEDDEfUqkrMzggjLk7KjGHWrL1jEZPnM7AcHfAmQJOkRi"
    "hJhs7fNng9vURypXojC+fpU/MHHQHeIq+4cxwMh19G8D3flY1mxBYahi8lE+cYlHZ6ukWC"
    "l5wlYiamHnTmtj4uuihq5JstcP96oWf2zpVjN6xo4qqdOtWLaFhx0i3uiyCuONZVM38EhS"
    "3p+IESVTAUyESh0ighgUSLUgWKCUrfBF4yPWf0grKRJiSck4aAADVw0ZJR12IEkzLKvb61"
    "uX7b5lGYXhFEukNB8l2ZKnxCG7yjWAoerCqz8ajf39o8bu/uFx8+DoqHm8eyzL6v4Ws47u"
    "w84ktMKqNLPO2063rzpE5XgPJ4RKuNcyUEAr0XhCfzpIsgo4GUFWjn8qkNOAfLW8BmLedS"
    "qIExIdJLN0EUrw4J3lIjIUI/nY2N2tAfy3eXHyzrzYkqVeZjF3o6xGmKeIJ4THodWalW9U"
    "fB3pNpuz0G02q+mqvCzdgWwfMZ9FBmBWyjmxNaR9eDAD7MODStYqK4s6XJOKlC89uahVmu"
    "tE6mGTXQI5sshLwzg02vuNo8OpmVYPdYb58tw8O4stcYJzhKCDWAnPvy573XKWKZEcTAfb"
    "AvwHXMxXEGoNO8VC1exx/s1ND9Ctc/Pf/Ng9Oeu1NBvKxZDpWnQFrRz5G+qUmOQWJpBNys"
    "HHEjnqNxOB+FrxbkUIp7wl7lana158nAL3JlHWWa/7tlWCvPWx3zZzyLFAnjX3Ti8RWiPb"
    "sZANX0LeZkgRUnv7AvxTmSOwh8rxZyXzBicS3Yl/rOKCKV/Q6RF3Eo2VGtb9znn7sm+ef8"
    "hMjlOz31Y5jcy8iFO3DnMGaloJ+KfTfwfUI/jU67bzE2harv/JUH2CgaAWobcWdFJOSpwa"
    "U8toPeXRzan1rOQaan1FtBwzKahZOdKDccqZUwk30B7fQuZYhRzaoFVli1lew8unQAKHWk"
    "mKpupnHJeRxtkoi9eo9O3aKI0sMWNoxiRAlX4NxAgB5cPeQI5ASqHAw4xRpvPND50XHOju"
    "Axa4iBdDME9QX0mopS60Il0MW88SuY49FFtRXCwtIFe9B8IparKnmsna6lnbSqQebnATv1"
    "nK+I3+W+Bf7fjG5dfQ432W6E26Z3NgzoktjrZhLIr1jLBraRdw83EwVzAyLP4ovHnv4Nca"
    "k2eO3UyXodxWENnYg2453KlMfhMYCu1EwitoN2ronrZPOufm2dZeY7uh+crtnlws0+APCq"
    "P2WwCJwKIkqFC5CqZFHuXcPorp7vOuhY29g6OD4/3Dg+kSOE2pW/mKTut3xHipxa3kmZJY"
    "HM69FcG5iQFUo17fGEDgO4/UelZyo/Vl0XpJTED3fklCAhdoIN9j1KdjRIyS0EAmf7suRM"
    "DCktLLlkVnjRWASApoqe3ofgSAXPr8HFy+M181moeAUwAT199FcAwcijggVIRPYZslsYOn"
    "rf8L+ULa0B7pmyAM+S60kaoJ3GIxklUQdBsWVddEVDiCS5jgegA97E6uwZa6ORI+AB8x4N"
    "IhJi8BJM4X4kE21lXJqp3Xsi71N6pMRQQQEarfQzkdZMvfZXr4Crcj6saVzhjr2EQFljIq"
    "oHVtjSAfzeNNZaWexmdda68qnCpFxFdXndOKewdTiRzeIMDOjpJ7mtV0kZRrqGqk++FqmF"
    "7n9ItmWSob9ZitCn/KfcqSnRiu7rakuBvd+CDrthtdv3PIJbGay6Tkmea2NMJs7tsdKaHF"
    "RWzWYudXcPeymiiq4Y10VPCQvEfh9aaO7DckpbHdyFO7iqpZMRXcx2MsTk3mNIO3Uy8lPf"
    "Tku8s3RmGE98S8PDFP2+Fh5+L9Z029xG+OtVHtL6sXmv1IHdo2DYgIT8F9yPktZU7yRQGg"
    "cilSbi2URdmQkgZQPkHpafpPVLVxLpfYxGzXOJdqsM177JyW2TiWDx/XRTNpbhe+ILiO5/"
    "zP8R2B/qyl5DL2Ax/ClN3FXv3T/eZMh/vNmrP9ZvFoH8u9vC3w9xK70aLURZBUGO+0XP4C"
    "thR8LtaxPVnwBexe7yyz7W91cga6e3Xeal9s7eVOp4unfmE4b/6j1ILc5ny6FC237BEkw0"
    "fFNEorWEgAa+PjbuJXm/jV5gz9d9X6E5yhJ8OjeE6d29hE8m/eXyAXVtwGrTgdX7HhUBV7"
    "uX/OiImJGLZHRknMJMrZrouawKTMQ2GTagxPHMb4XWIYP7kVq45OVO53qz256q3uxl2ucJ"
    "fVpJqDcFR8DenuzeQq79W4yntFV1m2KFDZPzSo/jQ8JfJTn4YvG+1FfBv+S6/P3f8Pyv1K"
    "Tw=="
)
